package limitconn

// ReasonLimitConn counts CONNECTs over the route's concurrent connections
// per key, in mqgate_connections_refused_total{reason}.
const ReasonLimitConn = "limit_conn"
