// Command sendgate is the sendgate binary: the server (serve) and the
// operator's and scripts' client (check, report, state, list, hold, release,
// reset, resolve, classify), plus policy, which prints the effective policy.
//
// Run "sendgate --help" for the commands and "sendgate CMD --help" for one
// command's arguments, flags and an example.
//
// Exit codes: 0 success, 1 error, 2 usage error, 3 "check" answered DEFER.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	// exitDefer is the exit code of "check" when the answer is DEFER, so
	// that scripts can branch on it.
	exitDefer = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake in the command line; it exits 2.
type usageError struct {
	cmd string // the command, "" for the top level
	msg string
}

func (e *usageError) Error() string { return e.msg }

// exitStatus ends the program with a code and no message (check's DEFER).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitCode prints err (unless it is silent) and returns the exit code for it.
func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	var es exitStatus
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &es):
		return int(es)
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sendgate: %s\n", ue.msg)
		if ue.cmd != "" {
			fmt.Fprintf(stderr, "Run 'sendgate %s --help' for usage.\n", ue.cmd)
		} else {
			fmt.Fprintf(stderr, "Run 'sendgate --help' for usage.\n")
		}
		return exitUsage
	}
	fmt.Fprintf(stderr, "sendgate: %v\n", err)
	return exitError
}

// invocation is one run of a command.
type invocation struct {
	ctx    context.Context
	cmd    *command
	args   []string // positional arguments
	stdout io.Writer
	stderr io.Writer
}

// runner runs a command once its flags are parsed.
type runner func(inv *invocation) error

// command describes one subcommand. define registers the command's flags on
// its own FlagSet and returns the function that runs it, which reads them.
type command struct {
	name    string
	args    string // positional arguments, for the usage line
	minArgs int
	maxArgs int // -1: no limit
	summary string
	help    string
	example string
	define  func(fs *flag.FlagSet) runner
}

// commands returns every command, in the order --help lists them.
func commands() []*command {
	return []*command{
		serveCommand(),
		policyCommand(),
		checkCommand(),
		reportCommand(),
		stateCommand(),
		listCommand(),
		holdCommand(),
		releaseCommand(),
		resetCommand(),
		resolveCommand(),
		classifyCommand(),
		tokenCommand(),
		simulateCommand(),
		benchCommand(),
	}
}

// run runs the command line args (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 {
		printUsage(stderr, cmds)
		return &usageError{msg: "no command given"}
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && name == "help" {
			if c := find(cmds, args[1]); c != nil {
				fs, _ := c.flagSet(stdout)
				fs.Usage()
				return nil
			}
		}
		printUsage(stdout, cmds)
		return nil
	}
	c := find(cmds, name)
	if c == nil {
		return &usageError{msg: fmt.Sprintf("unknown command %q", name)}
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func find(cmds []*command, name string) *command {
	for _, c := range cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

// flagSet builds the command's FlagSet, writing help to w.
func (c *command) flagSet(w io.Writer) (*flag.FlagSet, runner) {
	fs := flag.NewFlagSet("sendgate "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	r := c.define(fs)
	fs.Usage = func() { c.usage(w, fs) }
	return fs, r
}

func (c *command) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, r := c.flagSet(stdout)
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the FlagSet printed the help
	}
	if err != nil {
		return &usageError{cmd: c.name, msg: c.name + ": " + err.Error()}
	}
	switch {
	case len(pos) < c.minArgs:
		return &usageError{cmd: c.name, msg: fmt.Sprintf("%s: want %s", c.name, c.args)}
	case c.maxArgs >= 0 && len(pos) > c.maxArgs:
		return &usageError{cmd: c.name, msg: fmt.Sprintf("%s: too many arguments (want %s)", c.name, c.args)}
	}
	return r(&invocation{ctx: ctx, cmd: c, args: pos, stdout: stdout, stderr: stderr})
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("check 1.2.3.4 qq.com --count 5"); everything after
// "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *command) usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: sendgate %s", c.name)
	if c.args != "" {
		fmt.Fprintf(w, " %s", c.args)
	}
	fmt.Fprintf(w, " [flags]\n\n%s\n", c.summary)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(c.help, "\n"))
	}
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintf(w, "\nFlags:\n")
			first = false
		}
		arg, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if arg != "" {
			fmt.Fprintf(w, " %s", arg)
		}
		fmt.Fprintf(w, "\n      %s", usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", strings.TrimRight(c.example, "\n"))
	}
}

func printUsage(w io.Writer, cmds []*command) {
	fmt.Fprint(w, `sendgate: send admission for outbound mail fleets.

Mailers ask sendgate before every delivery attempt (CanSend) and report the
SMTP reply afterwards (ReportResult); sendgate enforces per (sender IP,
provider) tiered rate limits and backs off when a provider pushes back.

Usage: sendgate COMMAND [ARGS] [FLAGS]

Commands:
`)
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Flags may come before or after the arguments. Client commands talk to a
running server (--addr, default 127.0.0.1:7878) and print for people, or
protobuf JSON with --json.

Exit codes: 0 success, 1 error, 2 usage error, 3 "check" answered DEFER.

Run 'sendgate COMMAND --help' for a command's arguments, flags and an example.
`)
}
