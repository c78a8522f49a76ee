// Command scrape-meter measures what operators' reads cost the data path:
// how long a /metrics scrape takes with n connections held, and the
// CONNECT → CONNACK latency of new clients while scrapes run back to back.
// It runs mqgate as a child process in front of an in-process broker
// stand-in (internal/meter), with the admin listener on and public_status.
//
//	go run ./internal/cmd/scrape-meter -n 9000
//
// It prints three lines: scrape times with n connections held (serial
// scrapes, nothing else running) and the proxy's CPU time per scrape
// (steadier than wall time on a busy machine), connect latency without
// scrapes, and
// connect latency with scrapes back to back (and how many ran meanwhile).
// Each figure is p50 / p99 / max over the phase. With the file limit at
// 20,000 per process, n up to about 9,000 fits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/internal/meter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scrape-meter:", err)
		os.Exit(1)
	}
}

type settings struct {
	meter.Common
	scrapes, connects       int
	workers, connectWorkers int
}

func run() error {
	var s settings
	s.Register(flag.CommandLine, 9000, 2*time.Minute)
	flag.IntVar(&s.scrapes, "scrapes", 50, "serial /metrics scrapes for the scrape figure")
	flag.IntVar(&s.connects, "connects", 2000, "connect cycles per latency phase")
	flag.IntVar(&s.workers, "workers", 32, "concurrent clients while opening the held connections")
	flag.IntVar(&s.connectWorkers, "connect-workers", 4, "concurrent clients in the latency phases")
	flag.Parse()

	dir, err := os.MkdirTemp("", "scrape-meter")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sink, err := meter.StartSink()
	if err != nil {
		return err
	}
	defer sink.Close()
	proxyAddr, err := meter.FreeAddr()
	if err != nil {
		return err
	}
	adminAddr, err := meter.FreeAddr()
	if err != nil {
		return err
	}
	yml := fmt.Sprintf(`stream_proxy:
  tcp: [%q]
  data_path: %s
log: {level: warn, access_log: "off"}
admin:
  listen: %q
  public_status: true
  keys: [{key_env: SCRAPE_METER_ADMIN_KEY}]
upstreams:
  - id: 1
    nodes: {%q: 1}
stream_routes:
  - upstream_id: 1
`, proxyAddr, s.DataPath, adminAddr, sink.Addr())
	proc, err := meter.StartMqgate(dir, s.Mqgate, yml, "SCRAPE_METER_ADMIN_KEY=scrape-meter-0123456789abcdef")
	if err != nil {
		return err
	}
	defer proc.Stop()
	for _, a := range []string{proxyAddr, adminAddr} {
		if err := meter.WaitListening(a, 10*time.Second); err != nil {
			return err
		}
	}
	metricsURL := "http://" + adminAddr + "/metrics"
	client := &http.Client{Timeout: 30 * time.Second}

	conns, err := meter.OpenIdle(proxyAddr, s.N, s.workers)
	if err != nil {
		return fmt.Errorf("holding connections: %w", err)
	}
	defer meter.CloseAll(conns)
	if err := sink.WaitActive(s.N, s.Limit); err != nil {
		return err
	}
	held := fmt.Sprintf("%d held", s.N)

	// Serial scrapes, nothing else running.
	var scrapeTimes []time.Duration
	size := 0
	cpu0, err := meter.CPUTime(proc.Pid)
	if err != nil {
		return err
	}
	for range s.scrapes {
		d, n, err := scrape(client, metricsURL)
		if err != nil {
			return err
		}
		scrapeTimes = append(scrapeTimes, d)
		size = n
	}
	cpu1, err := meter.CPUTime(proc.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("scrape   %-10s /metrics (%d B): %s over %d scrapes; proxy CPU %.2f ms per scrape\n", held, size, quantiles(scrapeTimes), len(scrapeTimes),
		float64((cpu1-cpu0).Microseconds())/1000/float64(len(scrapeTimes)))

	// Connect latency, quiet.
	quiet, err := connectLatencies(proxyAddr, s.connects, s.connectWorkers, s.Limit)
	if err != nil {
		return fmt.Errorf("quiet connect phase: %w", err)
	}
	fmt.Printf("connect  %-10s no scrapes:      %s over %d connects\n", held, quantiles(quiet), len(quiet))

	// Connect latency with scrapes back to back.
	ctx, cancel := context.WithCancel(context.Background())
	var scrapes atomic.Int64
	var during []time.Duration
	var scrapeErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			d, _, err := scrape(client, metricsURL)
			if err != nil {
				scrapeErr = err
				return
			}
			during = append(during, d)
			scrapes.Add(1)
		}
	}()
	busy, err := connectLatencies(proxyAddr, s.connects, s.connectWorkers, s.Limit)
	cancel()
	wg.Wait()
	if err := errors.Join(err, scrapeErr); err != nil {
		return fmt.Errorf("connect phase with scrapes: %w", err)
	}
	fmt.Printf("connect  %-10s scraping:        %s over %d connects; %d scrapes meanwhile, %s\n",
		held, quantiles(busy), len(busy), scrapes.Load(), quantiles(during))
	return nil
}

// scrape GETs url once and returns how long the whole body took.
func scrape(client *http.Client, url string) (time.Duration, int, error) {
	start := time.Now()
	resp, err := client.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return time.Since(start), int(n), nil
}

// connectLatencies runs total connect cycles, workers at a time, and
// returns each one's time from dial to CONNACK.
func connectLatencies(addr string, total, workers int, limit time.Duration) ([]time.Duration, error) {
	lat := make([]time.Duration, total)
	n, err := meter.ConnectCycles(addr, "latency-", total, workers, limit, func(i int, d time.Duration) { lat[i] = d })
	return lat[:n], err
}

// quantiles formats p50 / p99 / max of ds.
func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("p50 %s / p99 %s / max %s", r(at(0.50)), r(at(0.99)), r(s[len(s)-1]))
}
