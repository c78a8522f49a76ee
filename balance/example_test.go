package balance_test

import (
	"errors"
	"fmt"

	"github.com/mqgate/mqgate/balance"
)

func Example() {
	nodes := []balance.Node{
		{Addr: "10.0.0.1:1883", Weight: 1},
		{Addr: "10.0.0.2:1883", Weight: 1},
		{Addr: "10.0.0.9:1883", Weight: 1, Priority: -1}, // backup
	}
	down := map[int]bool{0: true}
	b, err := balance.New(nodes, balance.Options{
		Type:  balance.TypeConsistentHash,
		State: balance.State{Healthy: func(n int) bool { return !down[n] }},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The proxy tries nodes in order until a dial succeeds or the retries
	// run out.
	dial := func(addr string) error {
		if addr == "10.0.0.2:1883" {
			return errors.New("connection refused")
		}
		return nil
	}
	const retries = 2
	tries := 0
	for i := range b.Order("sensor-42") {
		err := dial(nodes[i].Addr)
		fmt.Printf("dial %s: %v\n", nodes[i].Addr, err)
		if err == nil || tries == retries {
			break
		}
		tries++
	}
	// Output:
	// dial 10.0.0.2:1883: connection refused
	// dial 10.0.0.9:1883: <nil>
}

func ExampleNew_roundRobin() {
	nodes := []balance.Node{
		{Addr: "a:1883", Weight: 5},
		{Addr: "b:1883", Weight: 1},
		{Addr: "c:1883", Weight: 1},
	}
	b, err := balance.New(nodes, balance.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 7 {
		for i := range b.Order("") {
			fmt.Print(nodes[i].Addr[:1], " ")
			break
		}
	}
	fmt.Println()
	// Output: a a b a c a a
}
