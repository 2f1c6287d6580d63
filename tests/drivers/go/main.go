// The official Go Gremlin driver (gremlin-go) against one Gremlin endpoint (the sidecar), for the
// sidecar's integration tests (tests/integration/test_sidecar_drivers.py). Built by build.sh.
//
//	sidecar-go-driver URL MODE [COUNT]
//
// gremlin-go speaks GraphBinary only. The connection pool is capped at ONE connection, and the
// driver multiplexes every concurrent request on it. Modes (each prints one JSON object on
// stdout; the driver logs warnings to stderr):
//
//	multiplex N  N `g.inject(i)` bytecode traversals, N/4 scripts and 30 `server` name lookups,
//	             each group sent all at once from goroutines; prints {"values", "scripts",
//	             "names"}, then keeps the connection open until a line (or EOF) arrives on stdin,
//	             so the caller can count the sidecar's client connections.
//	commit       g.Tx(): addV('go') then commit; prints {"inside": count seen inside the tx}.
//	rollback     g.Tx(): addV('go_rolled_back') then rollback; prints {"inside": ...}.
//	load         8 goroutines of read-only name lookups; prints "started" after 100 answers;
//	             "mark" on stdin records how many answers had arrived and ends the run 150
//	             answers (or errors) later; "stop" ends it at once; bounded by 100000 answers
//	             and 300 s; prints {"names", "errors", "mark"} at the end.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	gremlingo "github.com/apache/tinkerpop/gremlin-go/v3/driver"
)

const (
	loadWorkers    = 8
	loadMaxAnswers = 100000
	loadMaxTime    = 300 * time.Second
	loadAfterMark  = 150
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: sidecar-go-driver URL multiplex|commit|rollback|load [COUNT]")
		os.Exit(2)
	}
	url, mode := os.Args[1], os.Args[2]
	count := 200
	if len(os.Args) > 3 {
		n, err := strconv.Atoi(os.Args[3])
		check(err)
		count = n
	}
	drc, err := gremlingo.NewDriverRemoteConnection(url, func(s *gremlingo.DriverRemoteConnectionSettings) {
		s.TraversalSource = "g"
		s.LogVerbosity = gremlingo.Warning
		s.MaximumConcurrentConnections = 1
		s.InitialConcurrentConnections = 1
		s.NewConnectionThreshold = 1 << 20
		s.ConnectionTimeout = 10 * time.Second
	})
	check(err)
	defer drc.Close()
	g := gremlingo.Traversal_().With(drc)

	var out map[string]any
	switch mode {
	case "multiplex":
		out = multiplex(g, drc, count)
	case "commit":
		out = transaction(g, "go", true)
	case "rollback":
		out = transaction(g, "go_rolled_back", false)
	case "load":
		out = load(g)
	default:
		check(fmt.Errorf("unknown mode %q", mode))
	}
	encoded, err := json.Marshal(out)
	check(err)
	fmt.Println(string(encoded))
	if mode == "multiplex" {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// all runs fn(i) for i in [0, n) in goroutines at once and returns the results in index order.
func all(n int, fn func(i int) (any, error)) []any {
	results := make([]any, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = fn(i)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		check(err)
	}
	return results
}

func single(results []*gremlingo.Result, err error) (*gremlingo.Result, error) {
	if err != nil {
		return nil, err
	}
	if len(results) != 1 {
		return nil, fmt.Errorf("expected one result, got %d", len(results))
	}
	return results[0], nil
}

func multiplex(g *gremlingo.GraphTraversalSource, drc *gremlingo.DriverRemoteConnection, count int) map[string]any {
	values := all(count, func(i int) (any, error) {
		r, err := single(g.Inject(i).ToList())
		if err != nil {
			return nil, err
		}
		return r.GetInt64()
	})
	scripts := all(count/4, func(i int) (any, error) {
		options := new(gremlingo.RequestOptionsBuilder).AddBinding("x", i).Create()
		rs, err := drc.SubmitWithOptions("x + 1000", options)
		if err != nil {
			return nil, err
		}
		r, err := single(rs.All())
		if err != nil {
			return nil, err
		}
		return r.GetInt64()
	})
	names := all(30, func(int) (any, error) {
		r, err := single(g.V().HasLabel("server").Values("name").ToList())
		if err != nil {
			return nil, err
		}
		return r.GetString(), nil
	})
	return map[string]any{"values": values, "scripts": scripts, "names": names}
}

func transaction(g *gremlingo.GraphTraversalSource, label string, commit bool) map[string]any {
	tx := g.Tx()
	gtx, err := tx.Begin()
	check(err)
	check(<-gtx.AddV(label).Property("driver", "go").Iterate())
	r, err := gtx.V().HasLabel(label).Count().Next()
	check(err)
	inside, err := r.GetInt64()
	check(err)
	if commit {
		check(tx.Commit())
	} else {
		check(tx.Rollback())
	}
	return map[string]any{"inside": inside}
}

func load(g *gremlingo.GraphTraversalSource) map[string]any {
	var mu sync.Mutex
	names := []string{}
	errs := []string{}
	mark := -1
	endAt := loadMaxAnswers // answers and errors; "mark" brings it to 150 after the mark
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	go func() {
		scanner := bufio.NewScanner(os.Stdin)
		for scanner.Scan() {
			switch strings.TrimSpace(scanner.Text()) {
			case "mark":
				mu.Lock()
				mark = len(names)
				endAt = min(endAt, len(names)+len(errs)+loadAfterMark)
				mu.Unlock()
			case "stop":
				halt()
				return
			}
		}
		halt() // EOF: stop as for "stop"
	}()
	deadline := time.Now().Add(loadMaxTime)
	started := false
	var wg sync.WaitGroup
	for w := 0; w < loadWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				done := len(names)+len(errs) >= endAt
				mu.Unlock()
				if done {
					return
				}
				results, err := g.V().HasLabel("server").Values("name").ToList()
				mu.Lock()
				if err != nil {
					errs = append(errs, err.Error())
				} else {
					for _, r := range results {
						names = append(names, r.GetString())
					}
				}
				if !started && len(names) >= 100 {
					started = true
					fmt.Println("started")
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return map[string]any{"names": names, "errors": errs, "mark": mark}
}
