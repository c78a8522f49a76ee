package limitreq

// ReasonLimitReq counts CONNECTs over the route's connection rate per key,
// in mqgate_connections_refused_total{reason}.
const ReasonLimitReq = "limit_req"
