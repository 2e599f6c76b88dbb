package smtpsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/emersion/go-smtp"
)

// Sender is one SMTP client connection from a chosen source IP, reused for
// many messages, as a mailer's connection to a provider's MX is. It is not
// safe for concurrent use: one Sender per sending lane.
type Sender struct {
	addr    string
	localIP string
	c       *smtp.Client
}

// Dial connects to the SMTP server at addr from localIP (any address of
// 127.0.0.0/8 on Linux, so that each loopback address is a distinct sender
// IP to the provider) and greets it.
func Dial(ctx context.Context, addr, localIP string) (*Sender, error) {
	s := &Sender{addr: addr, localIP: localIP}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sender) connect(ctx context.Context) error {
	ip := net.ParseIP(s.localIP)
	if ip == nil {
		return fmt.Errorf("dial %s: source %q is not an IP address", s.addr, s.localIP)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("dial %s from %s: %w", s.addr, s.localIP, err)
	}
	c := smtp.NewClient(conn)
	if err := c.Hello("mailer-" + strings.ReplaceAll(s.localIP, ":", "-") + ".sim"); err != nil {
		c.Close()
		return fmt.Errorf("hello %s from %s: %w", s.addr, s.localIP, err)
	}
	s.c = c
	return nil
}

// Send delivers one message from from to to and returns the provider's
// reply: the refusal of MAIL, RCPT or DATA, or the final reply to DATA. An
// error means there was no reply (the connection failed); the next Send
// dials again.
func (s *Sender) Send(ctx context.Context, from, to string, body []byte) (Reply, error) {
	if s.c == nil {
		if err := s.connect(ctx); err != nil {
			return Reply{}, err
		}
	}
	r, err := s.send(from, to, body)
	if err != nil {
		s.c.Close()
		s.c = nil
		return Reply{}, err
	}
	return r, nil
}

func (s *Sender) send(from, to string, body []byte) (Reply, error) {
	if err := s.c.Mail(from, nil); err != nil {
		return s.refused(err)
	}
	if err := s.c.Rcpt(to, nil); err != nil {
		return s.refused(err)
	}
	w, err := s.c.Data()
	if err != nil {
		return s.refused(err)
	}
	if _, err := w.Write(body); err != nil {
		return Reply{}, fmt.Errorf("write data: %w", err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return s.refused(err)
	}
	return parseOK(resp.StatusText), nil
}

// refused turns a refusal into its reply and resets the transaction; any
// other error is returned.
func (s *Sender) refused(err error) (Reply, error) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return Reply{}, err
	}
	r := Reply{Code: se.Code, Message: se.Message}
	if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	if rerr := s.c.Reset(); rerr != nil {
		return Reply{}, fmt.Errorf("reset after %d: %w", se.Code, rerr)
	}
	return r, nil
}

// parseOK splits the text of a 250 into its enhanced code and message.
func parseOK(text string) Reply {
	r := Reply{Code: 250, Message: text}
	if code, rest, ok := strings.Cut(text, " "); ok && isEnhanced(code) {
		r.Enhanced, r.Message = code, rest
	}
	return r
}

// isEnhanced reports whether s looks like "2.0.0".
func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// Close says QUIT and closes the connection.
func (s *Sender) Close() error {
	if s.c == nil {
		return nil
	}
	err := s.c.Quit()
	if err != nil {
		s.c.Close()
	}
	s.c = nil
	return err
}
