// Command healthswitch-sidecar is the in-cluster prober of healthswitch: it
// runs the configured checks every ~100 ms and pushes signed reports to the
// DNS servers.
//
//	healthswitch-sidecar -config sidecar.yaml          run
//	healthswitch-sidecar check -config sidecar.yaml    run every check once, print a table
//	healthswitch-sidecar keygen                        print a new random key
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/healthswitch/healthswitch/internal/redact"
	"github.com/healthswitch/healthswitch/sidecar"
)

var version = "dev"

const defaultConfig = "/etc/healthswitch/sidecar.yaml"

// exitBound is how long a stop may take before the process exits anyway.
const exitBound = 5 * time.Second

func main() { os.Exit(run()) }

func run() int {
	sidecar.Version = version
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return checkCmd(args[1:], os.Stdout, os.Stderr)
		case "keygen":
			return keygen(os.Stdout, os.Stderr)
		case "version":
			fmt.Println(version)
			return 0
		}
	}
	return serve(args, os.Stderr)
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthswitch-sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfig, "config file (YAML)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: healthswitch-sidecar [-config F] [-log-level L]\n       healthswitch-sidecar check -config F\n       healthswitch-sidecar keygen\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(os.Stdout, version)
		return 0
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "-log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg, err := sidecar.Load(*path)
	if err != nil {
		log.Error("config", "file", *path, "err", redact.Text(err.Error()))
		return 2
	}
	warn(log, *path, cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := sidecar.New(cfg, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(ctx, hup, *path, s, log)
	go func() {
		<-ctx.Done()
		time.AfterFunc(exitBound, func() {
			log.Error("did not stop in time; exiting", "bound", exitBound)
			os.Exit(1)
		})
	}()
	if err := s.Run(ctx); err != nil {
		log.Error("sidecar", "err", err)
		return 1
	}
	return 0
}

// reloadOnHUP reloads the config on SIGHUP. A config that does not load
// leaves the running one in place, and says why.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, path string, s *sidecar.Sidecar, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := sidecar.Load(path)
		if err == nil {
			warn(log, path, cfg)
			err = s.Reload(cfg)
		} else {
			s.ReloadFailed()
		}
		if err != nil {
			log.Error("reload failed; keeping the running config", "file", path, "err", redact.Text(err.Error()))
		}
	}
}

func warn(log *slog.Logger, path string, cfg *sidecar.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config", "file", path, "warning", w)
	}
}

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthswitch-sidecar check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", defaultConfig, "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := sidecar.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", *path, redact.Text(err.Error()))
		return 2
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *path, w)
	}
	results := sidecar.CheckAll(context.Background(), cfg)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tCRITICAL\tRESULT\tDURATION\tDETAIL")
	code := 0
	for i, c := range cfg.Checks {
		r := results[i]
		result := "ok"
		if !r.Healthy {
			result = "FAIL"
			if c.IsCritical() {
				code = 1
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\n", c.Name, c.Kind(), c.IsCritical(), result,
			r.Duration.Round(10*time.Microsecond), strings.ReplaceAll(r.Why(), "\n", " "))
	}
	tw.Flush()
	return code
}

// keygen prints 32 random bytes in base64: a key file's whole content.
func keygen(stdout, stderr io.Writer) int {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		fmt.Fprintln(stderr, errors.Join(errors.New("keygen"), err))
		return 1
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(b))
	return 0
}
