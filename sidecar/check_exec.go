package sidecar

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// ExecSpec runs a command (an argv: no shell unless the argv asks for one).
type ExecSpec struct {
	Command      []string `yaml:"command"`
	ExitCode     int      `yaml:"exit_code"`     // expected exit code, default 0
	ExpectOutput string   `yaml:"expect_output"` // optional regexp over stdout+stderr
	OutputLimit  int      `yaml:"output_limit"`  // bytes kept, default 4096

	outputRE *regexp.Regexp
}

func (s *ExecSpec) compile(*Check) (err error) {
	if len(s.Command) == 0 || s.Command[0] == "" {
		return errors.New("command: required (an argv list, e.g. [/usr/bin/test, -e, /run/ready])")
	}
	if s.OutputLimit < 0 {
		return fmt.Errorf("output_limit %d: must not be negative", s.OutputLimit)
	}
	if s.OutputLimit == 0 {
		s.OutputLimit = DefaultOutputLimit
	}
	if s.ExpectOutput != "" {
		if s.outputRE, err = regexp.Compile(s.ExpectOutput); err != nil {
			return fmt.Errorf("expect_output: %w", err)
		}
	}
	return nil
}

func probeExec(ctx context.Context, c *Check) Result {
	s := c.Exec
	r, err := runCommand(ctx, s.Command, s.OutputLimit)
	res := Result{Output: string(r.out)}
	switch {
	case err != nil:
		res.Err = err
	case r.exitCode != s.ExitCode:
		res.Err = fmt.Errorf("%s exited %d, want %d", s.Command[0], r.exitCode, s.ExitCode)
	case s.outputRE != nil && !s.outputRE.Match(r.out):
		res.Err = fmt.Errorf("output does not match %q", s.ExpectOutput)
	default:
		res.Healthy, res.Detail = true, fmt.Sprintf("exit %d", r.exitCode)
	}
	return res
}
