// Package mqtt decodes and encodes the MQTT control packets a proxy needs to
// see: the fixed header, CONNECT, CONNACK and DISCONNECT, for MQTT 3.1
// (protocol name "MQIsdp", level 3), 3.1.1 ("MQTT", level 4) and 5.0
// ("MQTT", level 5). It does no I/O.
//
// A proxy reads the first packet of a connection without consuming more,
// so it can forward the bytes later:
//
//	var buf []byte
//	n, err := mqtt.FrameLen(buf)
//	for errors.Is(err, mqtt.ErrIncomplete) || err == nil && len(buf) < n {
//		if buf, err = readMore(conn, buf); err != nil { // bounded in size and time
//			return err
//		}
//		n, err = mqtt.FrameLen(buf)
//	}
//	if err != nil {
//		return err // not MQTT
//	}
//	c, err := mqtt.ParseConnect(buf[:n]) // buf[n:] holds the client's next packets
//	var perr *mqtt.ProtocolError
//	if errors.As(err, &perr) && perr.Code != 0 {
//		// The specification lets the server say why before it closes.
//		conn.Write(mqtt.AppendConnack(nil, perr.Level, perr.Code, ""))
//	}
//	if err != nil {
//		return err
//	}
//
// It then routes on c.ClientID, c.Username and c.Level. To refuse a client
// whose CONNECT is valid, it answers in the client's version:
//
//	conn.Write(mqtt.AppendConnack(nil, c.Level, mqtt.ServerUnavailable, "no healthy broker"))
//
// To change the CONNECT before it goes to the broker, it edits c and
// encodes it again:
//
//	c.ClientID = cert.Subject.CommonName
//	pkt := mqtt.AppendConnect(nil, c)
//
// Every check in ParseConnect sits next to the conformance statement of the
// specification it enforces, and the error carries the statement id in
// [ProtocolError.Rule]. MQTT 3.1.1 and 5.0 number their statements
// independently, so the id depends on the level of the packet. MQTT 3.1 has
// no statement ids: its packets get the checks of 3.1.1, which clarified
// 3.1, and cite the 3.1.1 ids.
//
// Specifications:
//   - MQTT 3.1.1: https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html
//   - MQTT 5.0: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html
package mqtt
