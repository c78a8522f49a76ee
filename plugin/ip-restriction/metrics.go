package iprestriction

// ReasonIPRestriction counts clients refused for their address, in
// mqgate_connections_refused_total{reason}.
const ReasonIPRestriction = "ip_restriction"
