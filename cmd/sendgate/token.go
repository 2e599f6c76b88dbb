package main

import (
	"bufio"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sendgate/sendgate/internal/auth"
)

// tokenCommand makes tokens and their hashes for the --auth-file of serve.
func tokenCommand() *command {
	return &command{
		name:    "token",
		args:    "new|hash [TOKEN]",
		minArgs: 1, maxArgs: 2,
		summary: "make a random caller token (new) or print a token's hash (hash)",
		help: `'token new' prints a new random token and, on the next line, its SHA-256 as
the token_sha256 of an --auth-file entry. Give the token to the caller (it
never goes in the file) and the hash to the file.

'token hash TOKEN' prints the SHA-256 of TOKEN; without TOKEN it reads the
token from the first line of standard input, which keeps it out of the shell
history and the process list.`,
		example: `  sendgate token new
  printf '%s\n' "$SENDGATE_TOKEN" | sendgate token hash`,
		define: func(fs *flag.FlagSet) runner {
			return func(inv *invocation) error {
				switch inv.args[0] {
				case "new":
					if len(inv.args) > 1 {
						return &usageError{cmd: "token", msg: "token new: takes no token"}
					}
					tok, err := auth.NewToken(rand.Reader)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(inv.stdout, "token:        %s\ntoken_sha256: %s\n", tok, auth.HashToken(tok))
					return err
				case "hash":
					tok := ""
					if len(inv.args) > 1 {
						tok = inv.args[1]
					} else {
						var err error
						if tok, err = readLine(os.Stdin); err != nil {
							return fmt.Errorf("token hash: read the token from standard input: %w", err)
						}
					}
					if tok = strings.TrimSpace(tok); tok == "" {
						return &usageError{cmd: "token", msg: "token hash: empty token"}
					}
					_, err := fmt.Fprintln(inv.stdout, auth.HashToken(tok))
					return err
				}
				return &usageError{cmd: "token", msg: fmt.Sprintf("token: unknown action %q: want new or hash", inv.args[0])}
			}
		},
	}
}

// readLine reads the first line of r.
func readLine(r io.Reader) (string, error) {
	s := bufio.NewScanner(r)
	if s.Scan() {
		return s.Text(), nil
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", io.ErrUnexpectedEOF
}
