package flapguard

// ReasonFlapGuard counts CONNECTs refused because their key reconnected
// too often, in mqgate_connections_refused_total{reason}.
const ReasonFlapGuard = "flap_guard"
