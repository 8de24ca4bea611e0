package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodsSpec: containers Running, read from the runtime's CRI socket: the
// one set, or with neither socket nor command the first of the usual ones
// that exists (as crictl looks for them); else from `crictl ps -a` (forks
// crictl).
type PodsSpec struct {
	Socket     string   `yaml:"socket"`     // CRI endpoint, e.g. /run/containerd/containerd.sock: list and watch over gRPC
	Command    []string `yaml:"command"`    // fork this instead; default where no CRI socket is found [crictl, ps, -a]
	Containers []string `yaml:"containers"` // names that must be Running; empty: every container

	auto     bool // neither socket nor command set: look for a default socket
	mu       sync.Mutex
	conn     *grpc.ClientConn // kept between runs; dropped on an error
	rt       runtimeapi.RuntimeServiceClient
	endpoint string // conn's socket
}

func (s *PodsSpec) compile(*Check) error {
	if s.Socket != "" && len(s.Command) > 0 {
		return fmt.Errorf("socket and command: set one (socket reads the runtime directly)")
	}
	if s.Socket == "" && len(s.Command) == 0 {
		s.auto = true
		s.Command = []string{"crictl", "ps", "-a"}
	}
	return nil
}

// nativeEndpoint is the CRI socket a run lists over, "" to fork the command.
func (s *PodsSpec) nativeEndpoint() string {
	if s.Socket != "" || !s.auto {
		return s.Socket
	}
	endpoint, _ := criEndpoint(s)
	return endpoint
}

// container is one row of crictl's listing.
type container struct {
	Name, Pod, State string
	Attempt          int
}

func probePods(ctx context.Context, c *Check) Result {
	s := c.Pods
	if endpoint := s.nativeEndpoint(); endpoint != "" {
		list, err := s.criContainers(ctx, endpoint)
		if err != nil {
			return fail(err)
		}
		if err := judgeContainers(latestAttempts(list), s.Containers); err != nil {
			return fail(err)
		}
		return pass("%d containers running", len(latestAttempts(list)))
	}
	out, err := presetCommand(ctx, s.Command)
	if err != nil {
		return Result{Err: err, Output: string(out)}
	}
	list, err := parseCrictl(out)
	if err != nil {
		return Result{Err: err, Output: string(out)}
	}
	if err := judgeContainers(latestAttempts(list), s.Containers); err != nil {
		return Result{Err: err, Output: string(out)}
	}
	return pass("%d containers running", len(latestAttempts(list)))
}

// latestAttempts keeps, per pod and container name, the highest attempt: an
// Exited attempt 0 that was restarted as a Running attempt 1 is no fault.
func latestAttempts(list []container) []container {
	type key struct{ pod, name string }
	latest := map[key]container{}
	for _, ct := range list {
		k := key{ct.Pod, ct.Name}
		if prev, ok := latest[k]; !ok || ct.Attempt >= prev.Attempt {
			latest[k] = ct
		}
	}
	out := make([]container, 0, len(latest))
	for _, ct := range latest {
		out = append(out, ct)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod+"/"+out[i].Name < out[j].Pod+"/"+out[j].Name })
	return out
}

func judgeContainers(list []container, want []string) error {
	if len(want) == 0 {
		if len(list) == 0 {
			return fmt.Errorf("no containers listed")
		}
		for _, ct := range list {
			if !isRunning(ct.State) {
				return fmt.Errorf("container %s is %s", ct.label(), ct.State)
			}
		}
		return nil
	}
	for _, name := range want {
		found := false
		for _, ct := range list {
			if ct.Name != name {
				continue
			}
			found = true
			if !isRunning(ct.State) {
				return fmt.Errorf("container %s is %s", ct.label(), ct.State)
			}
		}
		if !found {
			return fmt.Errorf("container %s not found", name)
		}
	}
	return nil
}

func (ct container) label() string {
	if ct.Pod == "" {
		return ct.Name
	}
	return ct.Name + " (pod " + ct.Pod + ")"
}

func isRunning(state string) bool {
	return strings.EqualFold(state, "Running") || state == "CONTAINER_RUNNING"
}

// parseCrictl reads crictl's table (or its `-o json` form). The table's
// CREATED column holds spaces ("2 hours ago"), so columns are cut at the
// header's offsets, which tabwriter keeps aligned on every row.
func parseCrictl(out []byte) ([]container, error) {
	text := strings.TrimSpace(string(out))
	if strings.HasPrefix(text, "{") {
		return parseCrictlJSON([]byte(text))
	}
	lines := strings.Split(text, "\n")
	header := lines[0]
	cols := map[string]int{}
	for _, name := range []string{"STATE", "NAME", "ATTEMPT", "POD ID", "POD"} {
		cols[name] = columnAt(header, name)
	}
	if cols["STATE"] < 0 || cols["NAME"] < 0 {
		return nil, fmt.Errorf("crictl output has no STATE and NAME columns: %q", firstLine(out))
	}
	starts := headerStarts(header)
	cell := func(line, col string) string {
		at := cols[col]
		if at < 0 || at >= len(line) {
			return ""
		}
		end := len(line)
		for _, s := range starts {
			if s > at {
				end = min(s, len(line))
				break
			}
		}
		return strings.TrimSpace(line[at:end])
	}
	var list []container
	for _, line := range lines[1:] {
		if strings.TrimSpace(line) == "" {
			continue
		}
		ct := container{Name: cell(line, "NAME"), State: cell(line, "STATE"), Pod: cell(line, "POD")}
		ct.Attempt, _ = strconv.Atoi(cell(line, "ATTEMPT"))
		list = append(list, ct)
	}
	return list, nil
}

// columnAt finds a header word as a whole column title ("POD" not in "POD ID").
func columnAt(header, name string) int {
	for from := 0; ; {
		i := strings.Index(header[from:], name)
		if i < 0 {
			return -1
		}
		i += from
		end := i + len(name)
		startOK := i == 0 || header[i-1] == ' '
		endOK := end == len(header) || (header[end] == ' ' && (end+1 >= len(header) || header[end+1] == ' '))
		if startOK && endOK {
			return i
		}
		from = end
	}
}

// headerStarts lists where each column title begins: titles are separated by
// at least two spaces, while "POD ID" holds only one.
func headerStarts(header string) []int {
	var starts []int
	for i := 0; i < len(header); i++ {
		if header[i] != ' ' && (i == 0 || (i >= 2 && header[i-1] == ' ' && header[i-2] == ' ')) {
			starts = append(starts, i)
		}
	}
	return starts
}

func parseCrictlJSON(b []byte) ([]container, error) {
	var doc struct {
		Containers []struct {
			Metadata struct {
				Name    string `json:"name"`
				Attempt int    `json:"attempt"`
			} `json:"metadata"`
			State  string            `json:"state"`
			Labels map[string]string `json:"labels"`
		} `json:"containers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("crictl json: %w", err)
	}
	var list []container
	for _, c := range doc.Containers {
		list = append(list, container{Name: c.Metadata.Name, Attempt: c.Metadata.Attempt, State: c.State, Pod: c.Labels["io.kubernetes.pod.name"]})
	}
	return list, nil
}

// presetCommand runs a preset's command and fails on a non-zero exit.
func presetCommand(ctx context.Context, argv []string) ([]byte, error) {
	r, err := runCommand(ctx, argv, 256<<10)
	if err != nil {
		return r.out, err
	}
	if r.truncated {
		return r.out, fmt.Errorf("%s: output over %d bytes", argv[0], len(r.out))
	}
	if r.exitCode != 0 {
		return r.out, commandFailed(argv, r)
	}
	return r.out, nil
}
