package gen

import (
	"strconv"
	"strings"
)

// obj is a JSON object that keeps its key order, because nft prints keys in
// a fixed order and the dump should read like its output.
type obj []kv

type kv struct {
	k string
	v any
}

type arr []any

// null is JSON null (nft prints verdicts such as {"accept": null}).
type null struct{}

// writeJSON renders v the way nft -j does (jansson without JSON_COMPACT):
// ", " between members and ": " after keys, no other whitespace, '/' not
// escaped.
func writeJSON(b *strings.Builder, v any) {
	switch x := v.(type) {
	case obj:
		b.WriteByte('{')
		for i, m := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeString(b, m.k)
			b.WriteString(": ")
			writeJSON(b, m.v)
		}
		b.WriteByte('}')
	case arr:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeJSON(b, e)
		}
		b.WriteByte(']')
	case string:
		writeString(b, x)
	case int:
		b.WriteString(strconv.Itoa(x))
	case uint32:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case null:
		b.WriteString("null")
	default:
		panic("writeJSON: unsupported value")
	}
}

func writeString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteString(strconv.FormatInt(int64(c)>>4, 16))
			b.WriteString(strconv.FormatInt(int64(c)&0xf, 16))
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
}
