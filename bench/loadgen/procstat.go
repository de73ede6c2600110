package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every Linux we run on (Go cannot
// ask sysconf without cgo).
const clockTicks = 100

// procs is every process's parent and CPU ticks (its own and its reaped children's), read once for a sample.
type procs struct {
	stats    map[int]procStat
	children map[int][]int
}

// procStat is what cpuSecondsOf needs of /proc/<pid>/stat: the parent, and the CPU ticks of the process and of its
// reaped children.
type procStat struct {
	ppid  int
	ticks int64
}

// cpuSecondsOf sums the CPU (user + system) of the pids and of every process under them, those that have ended
// included: a process's children come and go (Postgres's backends are its postmaster's children, and a connection
// pool opens them when it first needs them, often after the run has begun), and the CPU of one that has ended is in
// its parent's cutime and cstime once reaped. A pid that is gone counts 0: a figure, not a broken run.
func (p procs) cpuSecondsOf(pids []int) float64 {
	var ticks int64
	var add func(pid int)
	add = func(pid int) {
		st, ok := p.stats[pid]
		if !ok {
			return
		}
		ticks += st.ticks
		for _, child := range p.children[pid] {
			add(child)
		}
	}
	for _, pid := range pids {
		add(pid)
	}
	return float64(ticks) / clockTicks
}

// readProcs reads every process's stat (processes that end meanwhile are left out).
func readProcs() procs {
	p := procs{stats: map[int]procStat{}, children: map[int][]int{}}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return p
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + entry.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses: the fields that follow start after the last ')'.
		end := bytes.LastIndexByte(raw, ')')
		if end < 0 || end+2 > len(raw) {
			continue
		}
		// fields[0] is the state (field 3 of stat): ppid is field 4, utime, stime, cutime and cstime fields 14-17.
		fields := strings.Fields(string(raw[end+2:]))
		if len(fields) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		var ticks int64
		for _, f := range fields[11:15] {
			n, _ := strconv.ParseInt(f, 10, 64)
			ticks += n
		}
		p.stats[pid] = procStat{ppid: ppid, ticks: ticks}
		p.children[ppid] = append(p.children[ppid], pid)
	}
	return p
}

// rssBytesOf sums VmRSS of the pids.
func rssBytesOf(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					total += kb * 1024
				}
				break
			}
		}
	}
	return total
}

// loadAvg1 is the one-minute load average, or -1 when /proc/loadavg cannot be read.
func loadAvg1() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// selfUsage is this process's CPU seconds (user + system, all threads) and its peak resident memory.
func selfUsage() (cpuSeconds float64, maxRSSBytes int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), ru.Maxrss * 1024 // Linux reports ru_maxrss in KiB
}

// raiseNoFile lifts the open-file limit to its hard limit: one socket per device, 10,000 devices and more.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}
