package rewrite_test

import (
	"fmt"

	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/rewrite"
	"github.com/mqgate/mqgate/vars"
)

// The client id becomes the certificate's serial, as NGINX Plus's
// mqtt_set_connect clientid $ssl_client_serial; the user name is built
// from the certificate's common name.
func ExampleRule_Apply() {
	rule, err := rewrite.NewRule("$ssl_client_serial", "${ssl_client_s_dn_cn}@site1", "")
	if err != nil {
		panic(err)
	}
	v := &vars.Set{SSLClientSerial: "0A1B2C", SSLClientSDNCN: "meter-7"}
	in := &mqtt.Connect{ProtocolName: "MQTT", Level: mqtt.Level311, CleanStart: true, KeepAlive: 30, ClientID: "SN-4711"}
	out, err := rule.Apply(in, v)
	if err != nil {
		panic(err)
	}
	fmt.Println(out.ClientID, out.Username, out.KeepAlive)

	// Without a client certificate the template is empty: refused.
	_, err = rule.Apply(in, &vars.Set{})
	fmt.Println(err)
	// Output:
	// 0A1B2C meter-7@site1 30
	// mqtt-rewrite client_id: template "$ssl_client_serial" yields an empty value
}
