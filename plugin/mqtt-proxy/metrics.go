package mqttproxy

// ReasonProtocolLevel counts CONNECTs of another protocol name or level
// than the route's, in mqgate_connections_refused_total{reason}.
const ReasonProtocolLevel = "protocol_level"
