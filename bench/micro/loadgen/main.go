// Command loadgen replays one Gremlin request frame over WebSockets as fast as the target
// answers: `-conns` connections, each with `-inflight` requests outstanding at all times
// (closed loop). Every request gets a fresh id spliced into the template at `-idoffset`;
// answers are matched by id, streamed (206) frames are followed to the final one. It prints
// one JSON object: requests answered in the measured window (and in all), errors, req/s and
// p50/p99 (ms) of the window.
// Bounded: it stops after -warmup + -duration, or after -max requests.
package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

type result struct {
	Requests  int64   `json:"requests"`
	Total     int64   `json:"total"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	ReqPerSec float64 `json:"req_per_s"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

func main() {
	url := flag.String("url", "", "ws://127.0.0.1:port/gremlin")
	conns := flag.Int("conns", 8, "connections")
	inflight := flag.Int("inflight", 1, "requests in flight per connection")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up")
	duration := flag.Duration("duration", 5*time.Second, "measured window")
	maxRequests := flag.Int64("max", 5_000_000, "stop after this many requests in all")
	templateHex := flag.String("template", "", "request frame, hex")
	idOffset := flag.Int("idoffset", -1, "offset of the 16-byte request id in the frame")
	flag.Parse()
	template, err := hex.DecodeString(*templateHex)
	if err != nil || *url == "" || *idOffset < 0 || *idOffset+16 > len(template) {
		fmt.Fprintln(os.Stderr, "loadgen: give -url, -template (hex) and a valid -idoffset")
		os.Exit(2)
	}
	start := time.Now()
	measureFrom := start.Add(*warmup)
	stopAt := measureFrom.Add(*duration)
	var total, errors, measured atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	var wg sync.WaitGroup
	for c := 0; c < *conns; c++ {
		ws, _, err := websocket.DefaultDialer.Dial(*url, nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: connect %s: %v\n", *url, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func(c int, ws *websocket.Conn) {
			defer wg.Done()
			defer ws.Close()
			var local []time.Duration
			sent := make(map[uint64]time.Time, *inflight)
			frame := make([]byte, len(template))
			copy(frame, template)
			var seq uint64
			send := func() bool {
				seq++
				binary.BigEndian.PutUint64(frame[*idOffset:], uint64(c+1))
				binary.BigEndian.PutUint64(frame[*idOffset+8:], seq)
				sent[seq] = time.Now()
				return ws.WriteMessage(websocket.BinaryMessage, frame) == nil
			}
			for i := 0; i < *inflight; i++ {
				if !send() {
					errors.Add(1)
					return
				}
			}
			for {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					errors.Add(1)
					break
				}
				// GraphBinary response: 0x81, null flag, 16-byte id, int32 status.
				if len(msg) < 22 || msg[0] != 0x81 || msg[1] != 0 {
					errors.Add(1)
					break
				}
				status := int32(binary.BigEndian.Uint32(msg[18:22]))
				if status == 206 {
					continue
				}
				id := binary.BigEndian.Uint64(msg[10:18])
				began, ok := sent[id]
				if !ok {
					errors.Add(1)
					break
				}
				delete(sent, id)
				now := time.Now()
				if status != 200 && status != 204 {
					errors.Add(1)
				} else if now.After(measureFrom) && now.Before(stopAt) && began.After(measureFrom) {
					measured.Add(1)
					local = append(local, now.Sub(began))
				}
				if now.After(stopAt) || total.Add(1) >= *maxRequests {
					if len(sent) == 0 {
						break
					}
					continue // drain what is in flight
				}
				if !send() {
					errors.Add(1)
					break
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}(c, ws)
	}
	wg.Wait()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	seconds := duration.Seconds()
	out := result{
		Requests: measured.Load(), Total: total.Load(), Errors: errors.Load(), Seconds: seconds,
		ReqPerSec: float64(measured.Load()) / seconds, P50Ms: pct(0.5), P99Ms: pct(0.99),
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
