// Command loadgen is Palaver's load generator: devices on ChatService/Connect streams (gRPC over h2c, one HTTP/2
// connection each by default), open-loop sending, acks as docs/protocol.md says, HDR histograms of delivery and
// send latency, CPU of the watched processes. bench/run.ts writes its plan and reads its result; README.md is the
// contract between them.
//
//	loadgen run   --plan PLAN.json --out RESULT.json [--shard I/N] [--devices-per-conn K]
//	loadgen merge --out MERGED.json RESULT.json...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
)

const usage = `usage:
  loadgen run   --plan PLAN.json --out RESULT.json [--shard I/N] [--devices-per-conn K]
  loadgen merge --out MERGED.json RESULT.json...`

// logOut takes progress lines (stderr: stdout stays free for whoever runs us).
var logOut io.Writer = os.Stderr

func main() {
	os.Exit(mainCode(os.Args[1:]))
}

// mainCode returns the exit status: 0 for any run that measured something, whatever the figures; 1 for a broken
// run (bad plan, no device could connect, a result that cannot be written); 2 for bad usage.
func mainCode(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(args[1:])
	case "merge":
		err = mergeCmd(args[1:])
	default:
		err = usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		fmt.Fprintln(os.Stderr, usage)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	planPath := fs.String("plan", "", "the plan JSON (written by bench/run.ts)")
	outPath := fs.String("out", "", "where to write the result JSON")
	shardArg := fs.String("shard", "0/1", "I/N: this process takes the devices whose index % N == I")
	perConn := fs.Int("devices-per-conn", 1, "devices whose streams share one HTTP/2 connection")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if *planPath == "" || *outPath == "" || fs.NArg() > 0 {
		return usageError("run needs --plan and --out, and nothing else")
	}
	shard, shards, err := parseShard(*shardArg)
	if err != nil {
		return usageError(err.Error())
	}
	if *perConn < 1 {
		return usageError("--devices-per-conn must be at least 1")
	}
	plan, err := loadPlan(*planPath)
	if err != nil {
		return err
	}
	// One P unless GOMAXPROCS says otherwise: loadgen shares the machine with the server, and on one P the wake-ups
	// of its goroutines (connection readers, send clock, ack clock) are run-queue operations instead of thread
	// wake-ups. Several processes (--shard) use more cores.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if _, err := raiseNoFile(); err != nil {
		fmt.Fprintln(logOut, "loadgen: could not raise the open-file limit:", err)
	}

	// The first SIGINT/SIGTERM ends the run gracefully (streams closed, result written); a second cancels the
	// streams outright.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		<-signals
		fmt.Fprintln(logOut, "loadgen: interrupted: ending the streams and writing what we have")
		close(stop)
		<-signals
		cancel()
	}()

	// LOADGEN_CPUPROFILE=FILE writes a Go CPU profile of the run (to see where loadgen's own time goes).
	if path := os.Getenv("LOADGEN_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	r := newRunner(plan, shard, shards, *perConn)
	res, runErr := r.execute(ctx, stop)
	if res != nil {
		if err := writeResult(*outPath, res); err != nil {
			return fmt.Errorf("writing %s: %w", *outPath, err)
		}
	}
	return runErr
}

func parseShard(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--shard %q: want I/N with 0 <= I < N", s)
	}
	return i, n, nil
}

func mergeCmd(args []string) error {
	fs := flag.NewFlagSet("merge", flag.ContinueOnError)
	outPath := fs.String("out", "", "where to write the merged result JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if *outPath == "" || fs.NArg() == 0 {
		return usageError("merge needs --out and at least one result")
	}
	var results []*Result
	for _, path := range fs.Args() {
		r, err := readResult(path)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	m, err := merge(results)
	if err != nil {
		return err
	}
	return writeResult(*outPath, m)
}
