package sdprewrite

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestCodecs(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want [][]Codec
	}{
		{"rtpmap and static", audioVideo, [][]Codec{
			{{"96", "opus", "48000", "2"}, {"0", "PCMU", "8000", ""}, {"8", "PCMA", "8000", ""}, {"101", "telephone-event", "8000", ""}},
			{{"103", "VP8", "90000", ""}, {"99", "H264", "90000", ""}},
		}},
		{"not RTP", t38, [][]Codec{{{"0", "PCMU", "8000", ""}}, nil}},
		{"static without rtpmap, unknown dynamic", "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n" +
			"m=audio 4000 RTP/AVP 18 9 97 10\r\n", [][]Codec{
			{{"18", "G729", "8000", ""}, {"9", "G722", "8000", ""}, {PT: "97"}, {"10", "L16", "44100", "2"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Codecs([]byte(tc.body))
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Codecs = %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func TestCodecNames(t *testing.T) {
	for _, tc := range []struct {
		c    Codec
		want []string
	}{
		{Codec{"0", "PCMU", "8000", ""}, []string{"PCMU", "PCMU/8000", "PCMU/8000/1"}},
		{Codec{"96", "opus", "48000", "2"}, []string{"opus", "opus/48000/2"}},
		{Codec{"97", "X", "", ""}, []string{"X"}},
		{Codec{PT: "97"}, nil},
	} {
		if got := tc.c.Names(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%+v: names %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestSetFormats(t *testing.T) {
	out, err := SetFormats([]byte(audioVideo), map[int]FormatEdit{0: {Formats: []string{"8", "96"}}, 1: {Formats: []string{"99"}, Reject: true}})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"m=audio 7078 RTP/AVP 8 96\r\n", "a=rtpmap:96 opus/48000/2\r\n", "a=fmtp:96 useinbandfec=1\r\n",
		"m=video 0 RTP/AVP 99\r\n", "a=fmtp:99 profile", "a=rtcp-fb:* nack pli\r\n", "b=AS:64\r\n", "a=rtcp:7079\r\n",
		"o=bob 1234 5678 IN IP4"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	for _, gone := range []string{"telephone-event", "a=rtpmap:103", "VP8"} {
		if strings.Contains(s, gone) {
			t.Errorf("%q left in\n%s", gone, s)
		}
	}
	for name, e := range map[string]map[int]FormatEdit{
		"unknown format": {0: {Formats: []string{"9"}}},
		"no format":      {0: {}},
		"no such m-line": {2: {Formats: []string{"0"}}},
	} {
		if _, err := SetFormats([]byte(audioVideo), e); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := SetFormats([]byte(t38), map[int]FormatEdit{0: {Formats: []string{"t38"}}}); err == nil {
		t.Error("udptl edited")
	}
}

// FuzzSetFormats: for any body Codecs accepts, keeping every other format of each RTP m-line in reverse order
// gives a body that parses, whose m-lines list exactly those formats, each still named as before.
func FuzzSetFormats(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before, err := Codecs(body)
		if err != nil {
			return
		}
		edits := map[int]FormatEdit{}
		want := make([][]Codec, len(before))
		for i, cs := range before {
			if len(cs) == 0 {
				continue
			}
			var keep []Codec
			for j := len(cs) - 1; j >= 0; j -= 2 {
				if !slices.ContainsFunc(keep, func(c Codec) bool { return c.PT == cs[j].PT }) {
					keep = append(keep, cs[j])
				}
			}
			var pts []string
			for _, c := range keep {
				pts = append(pts, c.PT)
			}
			edits[i] = FormatEdit{Formats: pts}
			want[i] = keep
		}
		out, err := SetFormats(body, edits)
		if err != nil {
			t.Fatalf("SetFormats: %v", err)
		}
		after, err := Codecs(out)
		if err != nil {
			t.Fatalf("result does not parse: %v\n%q", err, out)
		}
		for i := range before {
			if len(before[i]) > 0 && !reflect.DeepEqual(after[i], want[i]) {
				t.Fatalf("m-line %d: %+v, want %+v\n%q", i, after[i], want[i], out)
			}
		}
	})
}
