package mqttrewrite

// ReasonRewrite counts CONNECTs refused because a template yielded an
// empty or invalid field, in mqgate_connections_refused_total{reason}.
const ReasonRewrite = "rewrite"
