package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sendgate/sendgate/client"
	sendgatev1 "github.com/sendgate/sendgate/proto/sendgate/v1"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr    string
	timeout time.Duration
	json    bool

	token                         string
	tlsCA, tlsCert, tlsKey, tlsSN string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	var f clientFlags
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7878", "`address` of the sendgate gRPC service")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "give up after this `duration` (connecting included)")
	fs.BoolVar(&f.json, "json", false, "print the response as protobuf JSON, for scripts")
	fs.StringVar(&f.token, "token", "", "bearer `token` to call with (default $SENDGATE_TOKEN)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "connect with TLS, verifying the server with this CA bundle `file` (with --tls-cert alone: the system roots)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "client certificate `file` (PEM) for mutual TLS; implies TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&f.tlsSN, "tls-server-name", "", "`name` the server's certificate must carry (default: the host of --addr); implies TLS")
	return &f
}

// call connects to the server and runs fn with the generated stubs, within
// --timeout. Unlike a mailer's client it fails when the server cannot be
// reached.
func (f *clientFlags) call(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	opts, err := f.security()
	if err != nil {
		return err
	}
	c, err := client.Dial(ctx, f.addr, append(opts, client.WithTimeout(f.timeout), client.WithDeferCache(-1))...)
	if err != nil {
		return fmt.Errorf("sendgate at %s is not reachable: %w", f.addr, err)
	}
	defer c.Close()
	if err := fn(ctx, c); err != nil {
		if st, ok := status.FromError(err); ok {
			return fmt.Errorf("%s (%s)", st.Message(), st.Code())
		}
		return err
	}
	return nil
}

// print writes m as JSON with --json, or calls human otherwise.
func (f *clientFlags) print(inv *invocation, m proto.Message, human func(p *printer)) error {
	if f.json {
		return printJSON(inv.stdout, m)
	}
	p := newPrinter(inv.stdout, time.Now())
	human(p)
	return p.flush()
}

func parseCount(field, s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a whole number", field, s)
	}
	return uint32(n), nil
}

func checkCommand() *command {
	return &command{
		name:    "check",
		args:    "IP DOMAIN",
		minArgs: 2, maxArgs: 2,
		summary: "ask whether IP may send to DOMAIN now (CanSend); exit 3 on DEFER",
		help: `Asks the server whether sender IP may start a delivery to DOMAIN (a domain or
a whole address) now. An ALLOW takes --count from every tier of the key
unless --dry-run is given.

Exit status: 0 for ALLOW, 3 for DEFER (so scripts can branch), 1 for an
error, 2 for a usage error.`,
		example: `  sendgate check 203.0.113.7 qq.com
  sendgate check 203.0.113.7 user@gmail.com --count 5 --dry-run
  if sendgate check 203.0.113.7 qq.com >/dev/null; then send; fi`,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			count := fs.Uint("count", 1, "`messages` the attempt counts as")
			dry := fs.Bool("dry-run", false, "answer without taking anything")
			return func(inv *invocation) error {
				if *count > 1<<32-1 {
					return &usageError{cmd: "check", msg: "check: --count too large"}
				}
				var resp *sendgatev1.CanSendResponse
				err := cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					var err error
					resp, err = c.Admission().CanSend(ctx, &sendgatev1.CanSendRequest{
						SenderIp: inv.args[0], RecipientDomain: inv.args[1], Count: uint32(*count), DryRun: *dry,
					})
					return err
				})
				if err != nil {
					return err
				}
				if err := cf.print(inv, resp, func(p *printer) { p.canSend(resp) }); err != nil {
					return err
				}
				if resp.GetVerdict() == sendgatev1.Verdict_VERDICT_DEFER {
					return exitStatus(exitDefer)
				}
				return nil
			}
		},
	}
}

func reportCommand() *command {
	return &command{
		name:    "report",
		args:    "IP DOMAIN CODE [REPLY...]",
		minArgs: 3, maxArgs: -1,
		summary: "report what happened to a delivery attempt (ReportResult)",
		help: `Tells the server the SMTP reply an attempt from IP to DOMAIN got: the basic
CODE (0 when there was no reply) and the reply text (the remaining arguments,
joined by spaces). The enhanced code is parsed from the reply unless
--enhanced gives it. --not-attempted says the attempt that check allowed was
not made, which refunds its tokens.`,
		example: `  sendgate report 203.0.113.7 qq.com 250 "OK queued"
  sendgate report 203.0.113.7 qq.com 550 Ip frequency limited
  sendgate report 203.0.113.7 qq.com 0 --not-attempted`,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			enhanced := fs.String("enhanced", "", "enhanced status `code`, e.g. 4.7.28 (default: parsed from the reply)")
			notAttempted := fs.Bool("not-attempted", false, "the attempt was not made: refund its tokens")
			count := fs.Uint("count", 1, "`messages` the result covers")
			at := fs.String("at", "", "when the attempt was made, an RFC 3339 `time` (default: now)")
			return func(inv *invocation) error {
				code, err := parseCount("CODE", inv.args[2])
				if err != nil {
					return &usageError{cmd: "report", msg: "report: " + err.Error()}
				}
				req := &sendgatev1.ReportResultRequest{
					SenderIp: inv.args[0], RecipientDomain: inv.args[1], SmtpCode: code,
					EnhancedCode: *enhanced, Reply: strings.Join(inv.args[3:], " "), Count: uint32(*count),
				}
				if *notAttempted {
					req.Outcome = sendgatev1.Outcome_OUTCOME_NOT_ATTEMPTED
				}
				if *at != "" {
					t, err := time.Parse(time.RFC3339, *at)
					if err != nil {
						return &usageError{cmd: "report", msg: fmt.Sprintf("report: --at %q: want RFC 3339, e.g. 2026-11-27T10:00:00Z", *at)}
					}
					req.AttemptedAt = timestamppb.New(t)
				}
				var resp *sendgatev1.ReportResultResponse
				err = cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					resp, err = c.Admission().ReportResult(ctx, req)
					return err
				})
				if err != nil {
					return err
				}
				return cf.print(inv, resp, func(p *printer) { p.report(resp) })
			}
		},
	}
}

func stateCommand() *command {
	return &command{
		name:    "state",
		args:    "IP PROVIDER_OR_DOMAIN",
		minArgs: 2, maxArgs: 2,
		summary: "show everything known about one (IP, provider): the story of its state",
		help: `Prints the state of the key (sender IP, provider): the state, since and until
when, the rule or note and the reply that caused it, strikes, the rate
factor, every tier, and the history of transitions, newest first. The second
argument is a provider name, or a domain (or address) that is resolved to
its provider.`,
		example: `  sendgate state 203.0.113.7 tencent
  sendgate state 203.0.113.7 qq.com --json`,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			return func(inv *invocation) error {
				var resp *sendgatev1.GetStateResponse
				err := cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					var err error
					resp, err = c.Admin().GetState(ctx, &sendgatev1.GetStateRequest{SenderIp: inv.args[0], RecipientDomainOrProvider: inv.args[1]})
					return err
				})
				if err != nil {
					return err
				}
				return cf.print(inv, resp, func(p *printer) { p.keyState(resp.GetState()) })
			}
		},
	}
}

func listCommand() *command {
	return &command{
		name:    "list",
		maxArgs: 0,
		summary: "list keys (by default every key that is not HEALTHY)",
		help: `Lists keys with their state, filtered by --provider (a provider, or a domain
resolved to one), --ip and --state. Without --state it lists every key that
is not HEALTHY. Pages are fetched until --limit keys.`,
		example: `  sendgate list
  sendgate list --state blocked --provider tencent
  sendgate list --ip 203.0.113.7 --state healthy --json`,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			provider := fs.String("provider", "", "only keys of this `provider` (or a domain's provider)")
			ip := fs.String("ip", "", "only keys of this sender `IP`")
			state := fs.String("state", "", "only keys in this `state`: healthy, throttled, blocked, probing or held")
			limit := fs.Int("limit", 1000, "list at most this many `keys`")
			return func(inv *invocation) error {
				st, err := parseState(*state)
				if err != nil {
					return &usageError{cmd: "list", msg: "list: " + err.Error()}
				}
				all := &sendgatev1.ListStatesResponse{}
				err = cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					req := &sendgatev1.ListStatesRequest{Provider: *provider, SenderIp: *ip, State: st}
					for len(all.States) < *limit {
						req.PageSize = int32(min(*limit-len(all.States), 1000))
						resp, err := c.Admin().ListStates(ctx, req)
						if err != nil {
							return err
						}
						all.States = append(all.States, resp.GetStates()...)
						all.NextPageToken = resp.GetNextPageToken()
						if resp.GetNextPageToken() == "" {
							break
						}
						req.PageToken = resp.GetNextPageToken()
					}
					return nil
				})
				if err != nil {
					return err
				}
				return cf.print(inv, all, func(p *printer) { p.list(all, st) })
			}
		},
	}
}

func parseState(s string) (sendgatev1.ReputationState, error) {
	if s == "" {
		return sendgatev1.ReputationState_REPUTATION_STATE_UNSPECIFIED, nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "REPUTATION_STATE_") {
		name = "REPUTATION_STATE_" + name
	}
	v, ok := sendgatev1.ReputationState_value[name]
	if !ok || v == 0 {
		return 0, fmt.Errorf("--state %q: want healthy, throttled, blocked, probing or held", s)
	}
	return sendgatev1.ReputationState(v), nil
}

// setStateCommand builds hold, release and reset.
func setStateCommand(name string, action sendgatev1.StateAction, summary, help, example string) *command {
	return &command{
		name:    name,
		args:    "IP PROVIDER",
		minArgs: 2, maxArgs: 2,
		summary: summary,
		help: help + `

PROVIDER may also be a domain (or address), resolved to its provider. The
action is recorded in the key's history with --note. Prints the key's state
afterwards, as 'sendgate state' does.`,
		example: example,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			note := fs.String("note", "", "why, recorded in the key's history")
			var until *string
			if action == sendgatev1.StateAction_STATE_ACTION_HOLD {
				until = fs.String("until", "", "end of the hold: RFC 3339 time or a `duration` from now (2h, 1d); default: until released")
			}
			return func(inv *invocation) error {
				req := &sendgatev1.SetStateRequest{SenderIp: inv.args[0], Provider: inv.args[1], Action: action, Note: *note}
				if until != nil && *until != "" {
					t, err := parseUntil(*until, time.Now())
					if err != nil {
						return &usageError{cmd: name, msg: name + ": " + err.Error()}
					}
					req.Until = timestamppb.New(t)
				}
				var resp *sendgatev1.SetStateResponse
				err := cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					var err error
					resp, err = c.Admin().SetState(ctx, req)
					return err
				})
				if err != nil {
					return err
				}
				return cf.print(inv, resp, func(p *printer) { p.keyState(resp.GetState()) })
			}
		},
	}
}

// parseUntil reads an RFC 3339 time, or a duration from now ("90m", "2h",
// "1d", "1d12h").
func parseUntil(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("--until %q: want an RFC 3339 time (2026-11-27T10:00:00Z) or a positive duration (90m, 2h, 1d)", s)
	}
	return now.Add(d), nil
}

// parseDuration is time.ParseDuration with a leading "Nd" for days.
func parseDuration(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, err
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	return days + d, err
}

func holdCommand() *command {
	return setStateCommand("hold", sendgatev1.StateAction_STATE_ACTION_HOLD,
		"stop every send of IP to PROVIDER until released or --until",
		`Puts the key on operator hold: CanSend answers DEFER (reason HELD) until
--until, or until 'sendgate release' when --until is not given.`,
		`  sendgate hold 203.0.113.7 tencent --note "complaint spike, investigating"
  sendgate hold 203.0.113.7 qq.com --until 2h
  sendgate hold 203.0.113.7 tencent --until 2026-11-28T00:00:00+08:00`)
}

func releaseCommand() *command {
	return setStateCommand("release", sendgatev1.StateAction_STATE_ACTION_RELEASE,
		"return IP to PROVIDER to HEALTHY now (end a block or hold)",
		`Ends a block, probe or hold at once: the key is HEALTHY again, for example
after the provider whitelisted the IP.`,
		`  sendgate release 203.0.113.7 tencent --note "whitelisted via QQ feedback form"`)
}

func resetCommand() *command {
	return setStateCommand("reset", sendgatev1.StateAction_STATE_ACTION_RESET,
		"forget everything about IP to PROVIDER: buckets, strikes, ceilings, history",
		`Forgets the key's buckets, strikes, learned ceilings and history; only the
reset itself stays in the history.`,
		`  sendgate reset 203.0.113.7 tencent --note "new IP owner"`)
}

func resolveCommand() *command {
	return &command{
		name:    "resolve",
		args:    "DOMAIN",
		minArgs: 1, maxArgs: 1,
		summary: "show which provider DOMAIN (or an address) belongs to, and why",
		help: `Shows how the server maps a recipient domain to a provider: from the provider
table, by MX rollup (the domain's MX hosts), or the domain itself.`,
		example: `  sendgate resolve foxmail.com
  sendgate resolve example.com --json`,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			return func(inv *invocation) error {
				var resp *sendgatev1.ResolveProviderResponse
				err := cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					var err error
					resp, err = c.Admin().ResolveProvider(ctx, &sendgatev1.ResolveProviderRequest{Domain: inv.args[0]})
					return err
				})
				if err != nil {
					return err
				}
				return cf.print(inv, resp, func(p *printer) {
					p.kv("provider", resp.GetProvider())
					p.kv("via", resp.GetVia())
					if len(resp.GetMxHosts()) > 0 {
						p.kv("mx hosts", strings.Join(resp.GetMxHosts(), ", "))
					}
				})
			}
		},
	}
}

func classifyCommand() *command {
	return &command{
		name:    "classify",
		args:    "PROVIDER_OR_DOMAIN CODE [REPLY...]",
		minArgs: 2, maxArgs: -1,
		summary: "show what the reply rules make of an SMTP reply (changes nothing)",
		help: `Runs the reply rules of a provider (or a domain's provider) on a reply: the
basic CODE (0 for no reply) and the reply text (the remaining arguments,
joined by spaces). Nothing is recorded.`,
		example: `  sendgate classify qq.com 550 Ip frequency limited
  sendgate classify google 421 4.7.28 "Our system has detected an unusual rate of unsolicited mail"`,
		define: func(fs *flag.FlagSet) runner {
			cf := addClientFlags(fs)
			enhanced := fs.String("enhanced", "", "enhanced status `code` (default: parsed from the reply)")
			return func(inv *invocation) error {
				code, err := parseCount("CODE", inv.args[1])
				if err != nil {
					return &usageError{cmd: "classify", msg: "classify: " + err.Error()}
				}
				var resp *sendgatev1.ClassifyReplyResponse
				err = cf.call(inv.ctx, func(ctx context.Context, c *client.Client) error {
					resp, err = c.Admin().ClassifyReply(ctx, &sendgatev1.ClassifyReplyRequest{
						ProviderOrDomain: inv.args[0], SmtpCode: code, EnhancedCode: *enhanced, Reply: strings.Join(inv.args[2:], " "),
					})
					return err
				})
				if err != nil {
					return err
				}
				return cf.print(inv, resp, func(p *printer) {
					p.kv("classification", short(resp.GetClassification().String(), "CLASSIFICATION_"))
					p.kv("rule", orDash(resp.GetRule(), "(none: the default mapping by code)"))
					p.kv("provider", resp.GetProvider())
				})
			}
		},
	}
}
