package ng

import (
	"strconv"
	"strings"
)

// codecFlags folds the "codec" dictionary of offer and answer
// ({"strip": ["PCMU"], "offer": ["opus", "PCMA"], ...}) into the flags
// rtpengine treats as the same thing ("codec-strip-PCMU", "codec-offer-opus",
// ... in the flags list; rtpengine's NG control protocol documentation,
// "Optionally included codec manipulations"), so the backend reads one
// form. Flags is a map and "offer" is ordered, so each flag's value is its
// 1-based position in its list. A list may also be a single string, as
// rtpengine accepts. ok is false when the value is not a dictionary of
// strings or lists of strings; what could be used is used.
func codecFlags(flags map[string]string, v any) (ok bool) {
	d, isDict := v.(map[string]any)
	if !isDict {
		return false
	}
	ok = true
	for op, lv := range d {
		var names []string
		switch lv := lv.(type) {
		case string:
			names = []string{lv}
		case []any:
			for _, e := range lv {
				s, isStr := e.(string)
				if !isStr {
					ok = false
					continue
				}
				names = append(names, s)
			}
		default:
			ok = false
			continue
		}
		for i, n := range names {
			if n = strings.TrimSpace(n); n != "" {
				flags[normKey("codec-"+op+"-"+n)] = strconv.Itoa(i + 1)
			}
		}
	}
	return ok
}
