package ng

import "errors"

// ReasonUnrecognized is rtpengine's error-reason for a command it does
// not know (control_ng_process_payload in
// https://github.com/sipwise/rtpengine/blob/master/daemon/control_ng.c); the
// Server answers it for commands neither rtpengine nor this package
// knows.
const ReasonUnrecognized = "Unrecognized command"

// unsupportedCommands are the commands rtpengine documents (the list at
// the top of https://github.com/sipwise/rtpengine/blob/master/docs/ng_control_protocol.md
// and a section per command; control_ng.h's NG_COMMANDS for cli and
// transform) that this relay does not carry out, with why: they record,
// play or alter media, or manage rtpengine's media subscriptions, none of
// which the relay does. Keys are lower case, as Request.Command is.
var unsupportedCommands = map[string]string{
	"start recording":   "recording",
	"stop recording":    "recording",
	"pause recording":   "recording",
	"start forwarding":  "recording (PCM forwarding)",
	"stop forwarding":   "recording (PCM forwarding)",
	"play media":        "media playback",
	"stop media":        "media playback",
	"play dtmf":         "media playback (DTMF injection)",
	"block dtmf":        "DTMF blocking",
	"unblock dtmf":      "DTMF blocking",
	"block media":       "media blocking",
	"unblock media":     "media blocking",
	"silence media":     "media silencing (transcoding)",
	"unsilence media":   "media silencing (transcoding)",
	"publish":           "media subscriptions",
	"subscribe request": "media subscriptions",
	"subscribe answer":  "media subscriptions",
	"unsubscribe":       "media subscriptions",
	"connect":           "media subscriptions",
	"inject start":      "media injection",
	"inject stop":       "media injection",
	"create":            "media subscriptions",
	"create answer":     "media subscriptions",
	"mesh":              "media subscriptions",
	"transform":         "media transforms",
	"cli":               "rtpengine's CLI",
}

// unknownCommand is the error for a command the Server does not carry
// out: for one of rtpengine's, what it would need and its name (as the
// strict offer refusals do, "recording not supported: start recording"),
// so a script sees why; for any other, rtpengine's own reply.
func unknownCommand(command string) error {
	if why, ok := unsupportedCommands[command]; ok {
		return errors.New(why + " not supported: " + command)
	}
	//lint:ignore ST1005 rtpengine's reply, byte for byte
	return errors.New(ReasonUnrecognized)
}
