// Package directives holds the plugin execution order of the rebuilt CoreDNS,
// shared by its main and by tests that start CoreDNS in-process.
package directives

// List is the execution order. healthswitch sits after cache (so a cache in
// front honours our short TTLs) and before hosts, file and forward, which
// `fallthrough` hands other names to.
var List = []string{
	"root", "metadata", "cancel", "timeouts", "multisocket", "reload", "bufsize", "bind",
	"debug", "ready", "health", "pprof", "prometheus", "errors", "log", "any", "chaos",
	"loadbalance", "rewrite", "cache", "minimal", "template",
	"healthswitch",
	"hosts", "file", "forward", "whoami",
}
