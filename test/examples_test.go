package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/healthswitch/healthswitch/internal/corednstest"
	"github.com/healthswitch/healthswitch/internal/testutil"
	"github.com/healthswitch/healthswitch/sidecar"

	// The plugins the example Corefiles use (the health plugin and friends
	// are imported by corefiles_test.go too; importing twice is harmless).
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	_ "github.com/healthswitch/healthswitch/plugin/healthswitch"
)

const exRoot = "../examples"

// exDoc is one YAML document found under examples/.
type exDoc struct {
	file string
	obj  map[string]any
}

// exDocs decodes every YAML document of every .yaml/.yml file under examples/.
func exDocs(t *testing.T) []exDoc {
	t.Helper()
	var docs []exDoc
	err := filepath.WalkDir(exRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		objs, err := exDecodeAll(b)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, o := range objs {
			docs = append(docs, exDoc{file: p, obj: o})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 15 {
		t.Fatalf("found only %d YAML documents under %s", len(docs), exRoot)
	}
	return docs
}

func exDecodeAll(b []byte) ([]map[string]any, error) {
	var out []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if o != nil {
			out = append(out, o)
		}
	}
}

// Every YAML document under examples/ parses, and every Kubernetes object
// has the fields every object needs.
func TestExamplesYAMLParses(t *testing.T) {
	for _, d := range exDocs(t) {
		if _, ok := d.obj["kind"]; !ok {
			continue // a sidecar config or a kustomization without kind
		}
		if filepath.Base(d.file) == "kustomization.yaml" {
			continue
		}
		if exStr(d.obj, "apiVersion") == "" || exStr(d.obj, "metadata", "name") == "" {
			t.Errorf("%s: %s without apiVersion or metadata.name", d.file, exStr(d.obj, "kind"))
		}
	}
}

// exCorefiles returns every Corefile under examples/: files named Corefile
// and the Corefile key of ConfigMaps written out in YAML.
func exCorefiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(exRoot, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (d.Name() == "Corefile" || strings.HasSuffix(d.Name(), ".Corefile")) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = string(b)
		}
		return nil
	})
	for _, d := range exDocs(t) {
		if exStr(d.obj, "kind") != "ConfigMap" {
			continue
		}
		for k, v := range exMap(d.obj, "data") {
			if s, ok := v.(string); ok && (k == "Corefile" || strings.HasSuffix(k, ".Corefile")) {
				out[d.file+"#"+exStr(d.obj, "metadata", "name")+"/"+k] = s
			}
		}
	}
	return out
}

var (
	exReURL     = regexp.MustCompile(`\b(https?|tcp)://[^/\s]+`)
	exReKeyFile = regexp.MustCompile(`(?m)^(\s*(?:key_file|admin_key_file))\s+\S+`)
	exReAddr    = regexp.MustCompile(`(?m)^(\s*(?:listen|prometheus|health|ready))\s+[^\s{]+`)
	exReBlock   = regexp.MustCompile(`(?m)^([^\s#{}][^{\n]*)\{`)
	exRePort    = regexp.MustCompile(`:\d+$`)
	// tls CERT KEY CA of a store etcd block (the push API's tls has two).
	exReStoreTLS = regexp.MustCompile(`(?m)^(\s*tls)\s+\S+\s+\S+\s+\S+[ \t]*$`)
)

// exLocalCorefile makes a Corefile startable here: ports 0 on loopback,
// probes, peers and notify aimed at a closed loopback port, keys in temp files.
func exLocalCorefile(t *testing.T, corefile string) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := exReURL.ReplaceAllString(corefile, "$1://127.0.0.1:1")
	s = exReKeyFile.ReplaceAllString(s, "$1 "+key)
	s = exReAddr.ReplaceAllString(s, "$1 127.0.0.1:0")
	if exReStoreTLS.MatchString(s) {
		// store etcd's client certificate, key and CA: one self-signed
		// certificate plays all three (etcd itself is unreachable here).
		_, cert, key, _ := testutil.SelfSigned(t)
		s = exReStoreTLS.ReplaceAllString(s, "$1 "+cert+" "+key+" "+cert)
	}
	// lameduck would hold every stop for its whole duration.
	s = regexp.MustCompile(`(?m)^\s*lameduck\s+\S+\s*$`).ReplaceAllString(s, "")
	return exReBlock.ReplaceAllStringFunc(s, func(keys string) string {
		var out []string
		for _, k := range strings.Fields(strings.TrimSuffix(keys, "{")) {
			out = append(out, exRePort.ReplaceAllString(k, "")+":0")
		}
		return strings.Join(out, " ") + " {"
	})
}

// Every Corefile of the examples starts in-process with the real plugin.
// Sequential: caddy instances are process-global.
func TestExamplesCorefilesStart(t *testing.T) {
	cfs := exCorefiles(t)
	if len(cfs) < 2 {
		t.Fatalf("found %d Corefiles under %s, want one per overlay", len(cfs), exRoot)
	}
	for _, name := range exSortedKeys(cfs) {
		t.Run(name, func(t *testing.T) {
			s, err := corednstest.TryStart(t, exLocalCorefile(t, cfs[name]))
			if err != nil {
				t.Fatalf("starting CoreDNS: %v", err)
			}
			s.Stop()
		})
	}
}

// exSidecarConfigs returns every sidecar config under examples/: YAML
// documents with top-level cluster and checks, and ConfigMap values that are.
func exSidecarConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, d := range exDocs(t) {
		if exIsSidecarConfig(d.obj) {
			b, err := yaml.Marshal(d.obj)
			if err != nil {
				t.Fatal(err)
			}
			// Prefer the file's own bytes, so the loader sees what users do.
			if raw, err := os.ReadFile(d.file); err == nil {
				if objs, _ := exDecodeAll(raw); len(objs) == 1 {
					b = raw
				}
			}
			out[d.file] = b
		}
		if exStr(d.obj, "kind") == "ConfigMap" {
			for k, v := range exMap(d.obj, "data") {
				var o map[string]any
				if s, ok := v.(string); ok && yaml.Unmarshal([]byte(s), &o) == nil && exIsSidecarConfig(o) {
					out[d.file+"#"+k] = []byte(s)
				}
			}
		}
	}
	return out
}

func exIsSidecarConfig(o map[string]any) bool {
	_, c := o["cluster"]
	_, k := o["checks"]
	return c && k
}

// exSidecarLocal points key_file at a temp key, keeping every other byte.
func exSidecarLocal(t *testing.T, cfg []byte) []byte {
	t.Helper()
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^key_file:.*$`)
	if !re.Match(cfg) {
		t.Fatalf("no top-level key_file line")
	}
	return re.ReplaceAll(cfg, []byte("key_file: "+key))
}

// Every sidecar config of the examples loads with the sidecar's own loader.
func TestExamplesSidecarConfigsLoad(t *testing.T) {
	cfgs := exSidecarConfigs(t)
	if len(cfgs) < 2 {
		t.Fatalf("found %d sidecar configs under %s", len(cfgs), exRoot)
	}
	for _, name := range exSortedKeys(cfgs) {
		t.Run(name, func(t *testing.T) {
			cfg, err := sidecar.Parse(exSidecarLocal(t, cfgs[name]), t.TempDir())
			if err != nil {
				t.Fatalf("sidecar loader: %v", err)
			}
			for _, c := range cfg.Checks {
				c.Close()
			}
		})
	}
}

// Dockerfiles: static build in golang:1.26, packages that exist, stages
// that exist, a non-root final user.
func TestExamplesDockerfiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(exRoot, "docker", "*.Dockerfile"))
	if len(files) < 2 {
		t.Fatalf("found %d Dockerfiles in %s/docker", len(files), exRoot)
	}
	reFrom := regexp.MustCompile(`(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?`)
	reBuild := regexp.MustCompile(`go build [^\n]*(?:\\\n[^\n]*)*?\s(\./cmd/\S+)`)
	reUser := regexp.MustCompile(`(?m)^USER\s+(\S+)`)
	reCopyFrom := regexp.MustCompile(`COPY --from=(\S+)`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, _ := os.ReadFile(f)
			s := string(b)
			stages := map[string]bool{}
			for _, m := range reFrom.FindAllStringSubmatch(s, -1) {
				stages[m[2]] = true
			}
			if !strings.Contains(s, "FROM golang:1.26 AS build") {
				t.Error("no golang:1.26 build stage")
			}
			if !strings.Contains(s, `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w`) {
				t.Error("the build is not static, trimmed and stripped")
			}
			pkgs := reBuild.FindAllStringSubmatch(s, -1)
			if len(pkgs) == 0 {
				t.Error("no go build of ./cmd/...")
			}
			for _, m := range pkgs {
				if _, err := os.Stat(filepath.Join("..", m[1], "main.go")); err != nil {
					t.Errorf("builds %s, which has no main.go", m[1])
				}
			}
			for _, m := range reCopyFrom.FindAllStringSubmatch(s, -1) {
				if !stages[m[1]] {
					t.Errorf("COPY --from=%s: no such stage", m[1])
				}
			}
			users := reUser.FindAllStringSubmatch(s, -1)
			if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "0") || strings.HasPrefix(users[len(users)-1][1], "root") {
				t.Error("the final image does not run as a non-root user")
			}
			if _, err := os.Stat(f + ".dockerignore"); err != nil {
				t.Errorf("no %s.dockerignore", filepath.Base(f))
			}
		})
	}
}

// --- The overlays as the real `kubectl kustomize` builds them. ---

// exObj is one object of a build.
type exObj struct {
	m map[string]any
}

// exBuildOverlay builds an overlay with the real kustomize (kubectl's), in a
// copy of examples/kubernetes with throwaway keys where the secret
// generators expect the operator's key files.
func exBuildOverlay(t *testing.T, dir string) []*exObj {
	t.Helper()
	testutil.Need(t, "kubectl")
	tmp := t.TempDir()
	if err := os.CopyFS(tmp, os.DirFS(filepath.Join(exRoot, "kubernetes"))); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(tmp, "overlays", filepath.Base(dir))
	for _, k := range []string{"east.key", "west.key", "admin.key", "etcd-client.crt", "etcd-client.key", "etcd-ca.crt"} {
		if err := os.WriteFile(filepath.Join(overlay, "keys", k), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("kubectl", "kustomize", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", filepath.Base(dir), err, out)
	}
	objs, err := exDecodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	set := make([]*exObj, len(objs))
	for i, o := range objs {
		set[i] = &exObj{m: o}
	}
	return set
}

func (o *exObj) kind() string { return exStr(o.m, "kind") }
func (o *exObj) name() string { return exStr(o.m, "metadata", "name") }
func (o *exObj) ns() string   { return exStr(o.m, "metadata", "namespace") }
func (o *exObj) id() string   { return o.kind() + " " + o.ns() + "/" + o.name() }

var exClusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true}

// exRef is a reference from one object to another: the map and field that
// hold the referenced name, so a rename can write it.
type exRef struct {
	kind     string
	m        map[string]any
	field    string
	ns       string // "" means the referring object's namespace
	optional bool
	where    string
}

func (r exRef) name() string { return exStr(r.m, r.field) }

// namespace is where the referenced object must be: a subject names its
// own; everything else is in the referring object's namespace.
func (r exRef) namespace(from *exObj) string {
	if r.ns != "" {
		return r.ns
	}
	return from.ns()
}

// exRefs lists the references the examples use: what pods mount and run as,
// and what RoleBindings bind.
func exRefs(o *exObj) []exRef {
	var refs []exRef
	ref := func(m map[string]any, field, kind, where string, optional bool) {
		if _, ok := m[field].(string); ok {
			refs = append(refs, exRef{kind: kind, m: m, field: field, optional: optional, where: where})
		}
	}
	if o.kind() == "RoleBinding" || o.kind() == "ClusterRoleBinding" {
		if rr := exMap(o.m, "roleRef"); rr != nil {
			ref(rr, "name", exStr(rr, "kind"), "roleRef", false)
		}
		for _, s := range exList(o.m, "subjects") {
			if sm, ok := s.(map[string]any); ok && exStr(sm, "kind") == "ServiceAccount" {
				ref(sm, "name", "ServiceAccount", "subjects", false)
				refs[len(refs)-1].ns = exStr(sm, "namespace")
			}
		}
	}
	pod := exMap(o.m, "spec", "template", "spec")
	if pod == nil {
		return refs
	}
	ref(pod, "serviceAccountName", "ServiceAccount", "serviceAccountName", false)
	for _, v := range exList(pod, "volumes") {
		vm, _ := v.(map[string]any)
		if cm := exMap(vm, "configMap"); cm != nil {
			ref(cm, "name", "ConfigMap", "volume "+exStr(vm, "name"), cm["optional"] == true)
		}
		if s := exMap(vm, "secret"); s != nil {
			ref(s, "secretName", "Secret", "volume "+exStr(vm, "name"), s["optional"] == true)
		}
		for _, src := range exList(vm, "projected", "sources") {
			sm, _ := src.(map[string]any)
			if cm := exMap(sm, "configMap"); cm != nil {
				ref(cm, "name", "ConfigMap", "volume "+exStr(vm, "name"), cm["optional"] == true)
			}
			if s := exMap(sm, "secret"); s != nil {
				ref(s, "name", "Secret", "volume "+exStr(vm, "name"), s["optional"] == true)
			}
		}
	}
	for _, c := range exContainers(pod) {
		for _, e := range exList(c, "env") {
			em, _ := e.(map[string]any)
			if r := exMap(em, "valueFrom", "secretKeyRef"); r != nil {
				ref(r, "name", "Secret", "env "+exStr(em, "name"), r["optional"] == true)
			}
			if r := exMap(em, "valueFrom", "configMapKeyRef"); r != nil {
				ref(r, "name", "ConfigMap", "env "+exStr(em, "name"), r["optional"] == true)
			}
		}
		for _, e := range exList(c, "envFrom") {
			em, _ := e.(map[string]any)
			if r := exMap(em, "secretRef"); r != nil {
				ref(r, "name", "Secret", "envFrom", r["optional"] == true)
			}
			if r := exMap(em, "configMapRef"); r != nil {
				ref(r, "name", "ConfigMap", "envFrom", r["optional"] == true)
			}
		}
	}
	return refs
}

func exContainers(pod map[string]any) []map[string]any {
	var out []map[string]any
	for _, f := range []string{"initContainers", "containers"} {
		for _, c := range exList(pod, f) {
			if cm, ok := c.(map[string]any); ok {
				out = append(out, cm)
			}
		}
	}
	return out
}

func exOverlays(t *testing.T) []string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(exRoot, "kubernetes", "overlays", "*"))
	var out []string
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "kustomization.yaml")); err == nil {
			out = append(out, d)
		}
	}
	if len(out) < 2 {
		t.Fatalf("found %d overlays, want east and west", len(out))
	}
	return out
}

// The overlays build, and everything in them refers to something that
// exists: names after namePrefix and generator hashes, selectors, ports,
// mounts, and the paths and ports inside the Corefile and sidecar config.
func TestExamplesKustomizeReferences(t *testing.T) {
	clusters := map[string]string{} // overlay -> the Corefile's cluster lines
	for _, dir := range exOverlays(t) {
		overlay := filepath.Base(dir)
		t.Run(overlay, func(t *testing.T) {
			set := exBuildOverlay(t, dir)
			exCheckObjects(t, set)
			corefile := exCheckDNS(t, set)
			clusters[overlay] = strings.Join(exClusterLines(corefile), "\n")
			exCheckSidecar(t, set, overlay, corefile)
		})
	}
	// Every DNS server must know the same clusters with the same addresses,
	// or the two clusters would answer differently.
	var first string
	for _, o := range exSortedKeys(clusters) {
		if first == "" {
			first = o
			continue
		}
		if clusters[o] != clusters[first] {
			t.Errorf("overlays %s and %s define different clusters:\n%s\n---\n%s", first, o, clusters[first], clusters[o])
		}
	}
}

func exFind(set []*exObj, kind, ns, name string) *exObj {
	for _, o := range set {
		if o.kind() == kind && o.ns() == ns && o.name() == name {
			return o
		}
	}
	return nil
}

func exCheckObjects(t *testing.T, set []*exObj) {
	t.Helper()
	seen := map[string]bool{}
	namespaces := map[string]bool{}
	for _, o := range set {
		if o.kind() == "Namespace" {
			namespaces[o.name()] = true
		}
	}
	for _, o := range set {
		if seen[o.id()] {
			t.Errorf("%s: defined twice", o.id())
		}
		seen[o.id()] = true
		if !exClusterScoped[o.kind()] && !namespaces[o.ns()] {
			t.Errorf("%s: namespace %q is not the overlay's Namespace (generators and components need `namespace:` in the overlay too)", o.id(), o.ns())
		}
		for _, r := range exRefs(o) {
			ns := r.namespace(o)
			if exFind(set, r.kind, ns, r.name()) == nil && !(r.kind == "ClusterRole" && exFind(set, "ClusterRole", "", r.name()) != nil) {
				if r.optional {
					continue // e.g. a Secret another team owns
				}
				t.Errorf("%s: %s refers to %s %s/%s, which the build does not contain", o.id(), r.where, r.kind, ns, r.name())
			}
		}
		if pod := exMap(o.m, "spec", "template", "spec"); pod != nil {
			exCheckWorkload(t, o, pod)
		}
		if o.kind() == "Service" {
			exCheckService(t, set, o)
		}
	}
}

func exCheckWorkload(t *testing.T, o *exObj, pod map[string]any) {
	t.Helper()
	labels := exMap(o.m, "spec", "template", "metadata", "labels")
	sel := exMap(o.m, "spec", "selector", "matchLabels")
	if len(sel) == 0 {
		t.Errorf("%s: empty selector", o.id())
	}
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%v does not match the pod template (%v)", o.id(), k, v, labels[k])
		}
	}
	volumes := map[string]bool{}
	for _, v := range exList(pod, "volumes") {
		volumes[exStr(v.(map[string]any), "name")] = true
	}
	for _, c := range exContainers(pod) {
		for _, m := range exList(c, "volumeMounts") {
			if n := exStr(m.(map[string]any), "name"); !volumes[n] {
				t.Errorf("%s: container %s mounts volume %q, which the pod does not have", o.id(), exStr(c, "name"), n)
			}
		}
		for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
			hg := exMap(c, probe, "httpGet")
			if hg == nil {
				continue
			}
			if _, ok := exContainerPort(c, hg["port"], "TCP"); !ok {
				t.Errorf("%s: %s port %v is not a port of container %s", o.id(), probe, hg["port"], exStr(c, "name"))
			}
		}
	}
}

// exContainerPort finds a container port by name or number and protocol.
func exContainerPort(c map[string]any, port any, proto string) (int, bool) {
	for _, p := range exList(c, "ports") {
		pm := p.(map[string]any)
		pp := exStr(pm, "protocol")
		if pp == "" {
			pp = "TCP"
		}
		n, _ := pm["containerPort"].(int)
		if pp == proto && (port == pm["name"] || port == n) {
			return n, true
		}
	}
	return 0, false
}

func exCheckService(t *testing.T, set []*exObj, svc *exObj) {
	t.Helper()
	sel := exMap(svc.m, "spec", "selector")
	if len(sel) == 0 {
		t.Errorf("%s: no selector", svc.id())
		return
	}
	var pods []map[string]any
	for _, o := range set {
		labels := exMap(o.m, "spec", "template", "metadata", "labels")
		if labels == nil || o.ns() != svc.ns() {
			continue
		}
		match := true
		for k, v := range sel {
			match = match && labels[k] == v
		}
		if match {
			pods = append(pods, exMap(o.m, "spec", "template", "spec"))
		}
	}
	if len(pods) == 0 {
		t.Errorf("%s: selector %v matches no pod template", svc.id(), sel)
		return
	}
	for _, p := range exList(svc.m, "spec", "ports") {
		pm := p.(map[string]any)
		proto := exStr(pm, "protocol")
		if proto == "" {
			proto = "TCP"
		}
		target := pm["targetPort"]
		if target == nil {
			target = pm["port"]
		}
		for _, pod := range pods {
			found := false
			for _, c := range exContainers(pod) {
				_, ok := exContainerPort(c, target, proto)
				found = found || ok
			}
			if !found {
				t.Errorf("%s: port %v/%s targets %v, which no selected container exposes", svc.id(), pm["port"], proto, target)
			}
		}
	}
}

// exMounted returns the content of the file at path inside container c of
// pod, read from the ConfigMap or Secret (in set) mounted over it, and the
// kind it came from.
func exMounted(t *testing.T, set []*exObj, o *exObj, pod, c map[string]any, file string) (string, string) {
	t.Helper()
	for _, m := range exList(c, "volumeMounts") {
		mm := m.(map[string]any)
		mp := strings.TrimSuffix(exStr(mm, "mountPath"), "/")
		if path.Dir(file) != mp {
			continue
		}
		for _, v := range exList(pod, "volumes") {
			vm := v.(map[string]any)
			if exStr(vm, "name") != exStr(mm, "name") {
				continue
			}
			kind, name := "ConfigMap", exStr(vm, "configMap", "name")
			if name == "" {
				kind, name = "Secret", exStr(vm, "secret", "secretName")
			}
			src := exFind(set, kind, o.ns(), name)
			if src == nil {
				t.Errorf("%s: %s comes from %s %s, which the build does not contain", o.id(), file, kind, name)
				return "", kind
			}
			data, ok := exMap(src.m, "data")[path.Base(file)]
			if !ok {
				t.Errorf("%s: %s: %s %s has no key %q", o.id(), file, kind, name, path.Base(file))
			}
			s, _ := data.(string)
			return s, kind
		}
	}
	t.Errorf("%s: container %s has nothing mounted at %s", o.id(), exStr(c, "name"), path.Dir(file))
	return "", ""
}

// exWorkloadWithArg finds the container started with flag (e.g. -conf).
func exWorkloadWithArg(set []*exObj, flag string) (o *exObj, pod, c map[string]any, value string) {
	for _, o := range set {
		pod := exMap(o.m, "spec", "template", "spec")
		for _, c := range exContainers(pod) {
			args := exList(c, "args")
			for i, a := range args {
				if a == flag && i+1 < len(args) {
					return o, pod, c, fmt.Sprint(args[i+1])
				}
			}
		}
	}
	return nil, nil, nil, ""
}

var (
	exReServerPort = regexp.MustCompile(`(?m)^[^\s#{}][^{\n]*:(\d+)[^{\n]*\{`)
	exReDirective  = regexp.MustCompile(`(?m)^\s*(listen|prometheus|health|ready)\s+([^\s{]+)`)
	exReKeyPath    = regexp.MustCompile(`(?m)^\s*(?:key_file|admin_key_file)\s+(\S+)`)
	exReCluster    = regexp.MustCompile(`(?m)^\s*cluster\s+(\S+)\s+([^{\n]*)`)
)

func exClusterLines(corefile string) []string {
	var out []string
	for _, m := range exReCluster.FindAllStringSubmatch(corefile, -1) {
		out = append(out, m[1]+" "+strings.TrimSpace(m[2]))
	}
	return out
}

// exCheckDNS checks the DNS server's Deployment against its Corefile and
// returns the Corefile.
func exCheckDNS(t *testing.T, set []*exObj) string {
	t.Helper()
	o, pod, c, conf := exWorkloadWithArg(set, "-conf")
	if o == nil {
		t.Fatal("no container runs with -conf (the DNS server)")
	}
	corefile, _ := exMounted(t, set, o, pod, c, conf)
	if corefile == "" {
		t.Fatalf("%s: empty Corefile", o.id())
	}
	for _, m := range exReServerPort.FindAllStringSubmatch(corefile, -1) {
		n, _ := strconv.Atoi(m[1])
		for _, proto := range []string{"UDP", "TCP"} {
			if _, ok := exContainerPort(c, n, proto); !ok {
				t.Errorf("%s: the Corefile serves DNS on %d but the container has no %d/%s port", o.id(), n, n, proto)
			}
		}
	}
	want := map[string]string{"listen": "push", "prometheus": "metrics", "health": "health", "ready": "ready"}
	for _, m := range exReDirective.FindAllStringSubmatch(corefile, -1) {
		host, port, err := net.SplitHostPort(m[2])
		if err != nil {
			t.Errorf("%s: %s %s: %v", o.id(), m[1], m[2], err)
			continue
		}
		if host == "127.0.0.1" || host == "localhost" || host == "::1" {
			t.Errorf("%s: %s binds %s: the kubelet and Services reach the pod IP, not loopback", o.id(), m[1], m[2])
		}
		n, _ := strconv.Atoi(port)
		if got, ok := exContainerPort(c, want[m[1]], "TCP"); !ok || got != n {
			t.Errorf("%s: %s is on %s but container port %q is %d", o.id(), m[1], port, want[m[1]], got)
		}
	}
	if p := exStr(c, "livenessProbe", "httpGet", "path"); p != "/health" || exStr(c, "livenessProbe", "httpGet", "port") != "health" {
		t.Errorf("%s: liveness must be the health plugin's /health on port health", o.id())
	}
	if p := exStr(c, "readinessProbe", "httpGet", "path"); p != "/ready" || exStr(c, "readinessProbe", "httpGet", "port") != "ready" {
		t.Errorf("%s: readiness must be the ready plugin's /ready on port ready", o.id())
	}
	for _, m := range exReKeyPath.FindAllStringSubmatch(corefile, -1) {
		if _, kind := exMounted(t, set, o, pod, c, m[1]); kind != "Secret" {
			t.Errorf("%s: key %s is not mounted from a Secret", o.id(), m[1])
		}
	}
	return corefile
}

// exCheckSidecar checks the sidecar workload against its config and the
// overlay's Corefile and Services.
func exCheckSidecar(t *testing.T, set []*exObj, overlay, corefile string) {
	t.Helper()
	o, pod, c, file := exWorkloadWithArg(set, "-config")
	if o == nil {
		t.Fatal("no container runs with -config (the sidecar)")
	}
	if n := exCountWorkloads(set, "-config"); n != 1 {
		t.Errorf("%d sidecar workloads: the DNS servers keep one sidecar signal per cluster, so run exactly one", n)
	}
	raw, _ := exMounted(t, set, o, pod, c, file)
	var cfg struct {
		Cluster  string   `yaml:"cluster"`
		KeyFile  string   `yaml:"key_file"`
		ReportTo []string `yaml:"report_to"`
		Listen   string   `yaml:"listen"`
	}
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("%s: sidecar config: %v", o.id(), err)
	}
	// An overlay is named after its cluster, or cluster-variant (east-etcd).
	if c, _, _ := strings.Cut(overlay, "-"); cfg.Cluster != c {
		t.Errorf("overlay %s runs the sidecar of cluster %q", overlay, cfg.Cluster)
	}
	found := false
	for _, l := range exClusterLines(corefile) {
		found = found || strings.Fields(l)[0] == cfg.Cluster
	}
	if !found {
		t.Errorf("sidecar cluster %q is not a cluster of the overlay's Corefile", cfg.Cluster)
	}
	if _, kind := exMounted(t, set, o, pod, c, cfg.KeyFile); kind != "Secret" {
		t.Errorf("%s: key %s is not mounted from a Secret", o.id(), cfg.KeyFile)
	}
	if !exCorefileHasKey(corefile, cfg.Cluster) {
		t.Errorf("the Corefile gives cluster %s no key_file, so its sidecar's reports would be refused", cfg.Cluster)
	}
	// The liveness probe must reach the sidecar's listen address.
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		t.Fatalf("sidecar listen %q: %v", cfg.Listen, err)
	}
	n, _ := strconv.Atoi(port)
	probe := exMap(c, "livenessProbe", "httpGet")
	if got, ok := exContainerPort(c, probe["port"], "TCP"); !ok || got != n {
		t.Errorf("%s: liveness probes port %v (%d), the sidecar listens on %s", o.id(), probe["port"], got, cfg.Listen)
	}
	loopback := host == "127.0.0.1" || host == "localhost"
	if loopback && !(pod["hostNetwork"] == true && exStr(probe, "host") == "127.0.0.1") {
		t.Errorf("%s: the sidecar listens on %s, which the kubelet's probe cannot reach", o.id(), cfg.Listen)
	}
	// report_to: in-cluster names must be Services of this build with that
	// port, and one of them the push Service of this cluster's DNS server.
	local := false
	for _, r := range cfg.ReportTo {
		u, err := url.Parse(r)
		if err != nil {
			t.Errorf("report_to %q: %v", r, err)
			continue
		}
		labels := strings.Split(u.Hostname(), ".")
		if len(labels) < 3 || labels[2] != "svc" {
			continue // another cluster's address
		}
		svc := exFind(set, "Service", labels[1], labels[0])
		if svc == nil {
			t.Errorf("report_to %s: no Service %s/%s in the build (namePrefix?)", r, labels[1], labels[0])
			continue
		}
		ok := false
		for _, p := range exList(svc.m, "spec", "ports") {
			ok = ok || fmt.Sprint(p.(map[string]any)["port"]) == u.Port()
		}
		if !ok {
			t.Errorf("report_to %s: Service %s has no port %s", r, svc.name(), u.Port())
		}
		local = true
	}
	if !local {
		t.Errorf("the sidecar does not report to its own cluster's DNS server")
	}
}

func exCountWorkloads(set []*exObj, flag string) int {
	n := 0
	for _, o := range set {
		if _, _, _, v := exWorkloadWithArg([]*exObj{o}, flag); v != "" {
			n++
		}
	}
	return n
}

// exCorefileHasKey reports whether cluster's block sets key_file.
func exCorefileHasKey(corefile, cluster string) bool {
	re := regexp.MustCompile(`(?s)cluster\s+` + regexp.QuoteMeta(cluster) + `\s[^{}\n]*\{([^}]*)\}`)
	m := re.FindStringSubmatch(corefile)
	return m != nil && strings.Contains(m[1], "key_file")
}

// --- small helpers over decoded YAML ---

func exMap(m map[string]any, keys ...string) map[string]any {
	cur := m
	for _, k := range keys {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

func exStr(m map[string]any, keys ...string) string {
	if len(keys) == 0 {
		return ""
	}
	parent := exMap(m, keys[:len(keys)-1]...)
	if parent == nil {
		return ""
	}
	v, ok := parent[keys[len(keys)-1]]
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func exList(m map[string]any, keys ...string) []any {
	parent := exMap(m, keys[:len(keys)-1]...)
	if parent == nil {
		return nil
	}
	l, _ := parent[keys[len(keys)-1]].([]any)
	return l
}

func exSet(m map[string]any, v any, keys ...string) {
	cur := m
	for _, k := range keys[:len(keys)-1] {
		next, ok := cur[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[k] = next
		}
		cur = next
	}
	cur[keys[len(keys)-1]] = v
}

func exSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The Grafana dashboard queries only metrics the plugin exports.
func TestExamplesDashboardMetrics(t *testing.T) {
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../plugin/healthswitch/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`Name:\s*"(\w+)"`).FindAllStringSubmatch(string(src), -1) {
		exported["coredns_healthswitch_"+m[1]] = true
	}
	reMetric := regexp.MustCompile(`coredns_healthswitch_\w+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range reMetric.FindAllString(tg.Expr, -1) {
				n++
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !exported[base] {
					t.Errorf("panel %q queries %s, which plugin/healthswitch/metrics.go does not define", p.Title, m)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("the dashboard queries nothing")
	}
}
