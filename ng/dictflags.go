package ng

import (
	"slices"
	"strconv"
)

// addDictFlags takes a dictionary-valued key such as "codec":
// {"transcode": ["PCMA"], "strip": ["G722"]} as the flags rtpengine
// documents as its equivalent in the flags list (offer, "codec
// manipulations", in
// https://github.com/sipwise/rtpengine/blob/master/docs/ng_control_protocol.md:
// "These options can also be put into the flags list using a prefix of
// codec-"): codec-transcode-pcma and
// codec-strip-g722, each with its 1-based position in its list as value
// (Flags is a map; codec offer is ordered). A string or integer entry
// becomes key-entry=value (moh: {"file": "/x.wav"} is moh-file=/x.wav). ok is false when some
// entry could not be used (a nested dictionary, as in sdp-attr), for the
// debug log of ignored keys; the usable entries are taken all the same.
func addDictFlags(flags map[string]string, key string, d map[string]any) (ok bool) {
	ok = true
	subs := make([]string, 0, len(d))
	for k := range d {
		subs = append(subs, k)
	}
	slices.Sort(subs)
	for _, sk := range subs {
		name := key + "-" + normKey(sk)
		switch v := d[sk].(type) {
		case string:
			flags[name] = v
		case int64:
			flags[name] = strconv.FormatInt(v, 10)
		case []any:
			l, err := asStrings(name, v)
			if err != nil {
				ok = false
				continue
			}
			for i, s := range l {
				if s = normKey(s); s != "" {
					flags[name+"-"+s] = strconv.Itoa(i + 1)
				}
			}
		default:
			ok = false
		}
	}
	return ok
}
