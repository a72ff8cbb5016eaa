package out

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// JSONColumns gives one column per JSON field of T, named by its tag, so a
// spreadsheet and a jq query over results.jsonl talk about the same
// things. A nested struct's fields are named with its name and "_" before
// theirs. Numbers print as JSON prints them, a nil pointer and a zero time
// as an empty cell, a []string joined by "; ". A field without such a
// plain form (a map, another slice) needs an entry in custom, as does one
// that wants another form; without one JSONColumns panics, which the
// caller's first test shows.
func JSONColumns[T any](custom map[string]func(*T) string) []Column[T] {
	var cols []Column[T]
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			name = prefix + name
			idx := append(append([]int(nil), index...), i)
			if get, ok := custom[name]; ok {
				cols = append(cols, Col(name, get))
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
				walk(f.Type, name+"_", idx)
				continue
			}
			format := plainFormat(f.Type)
			if format == nil {
				panic(fmt.Sprintf("out.JSONColumns: field %s (%s) has no plain form: give it a custom column", name, f.Type))
			}
			cols = append(cols, Col(name, func(r *T) string { return format(reflect.ValueOf(r).Elem().FieldByIndex(idx)) }))
		}
	}
	walk(reflect.TypeFor[T](), "", nil)
	return cols
}

func plainFormat(t reflect.Type) func(reflect.Value) string {
	switch t.Kind() {
	case reflect.String:
		return reflect.Value.String
	case reflect.Bool:
		return func(v reflect.Value) string { return strconv.FormatBool(v.Bool()) }
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(v reflect.Value) string { return strconv.FormatInt(v.Int(), 10) }
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return func(v reflect.Value) string { return strconv.FormatUint(v.Uint(), 10) }
	case reflect.Float32, reflect.Float64:
		return func(v reflect.Value) string { return Plain(v.Float()) }
	case reflect.Pointer:
		elem := plainFormat(t.Elem())
		if elem == nil {
			return nil
		}
		return func(v reflect.Value) string {
			if v.IsNil() {
				return ""
			}
			return elem(v.Elem())
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return func(v reflect.Value) string { return strings.Join(v.Interface().([]string), "; ") }
		}
	case reflect.Struct:
		if t == reflect.TypeFor[time.Time]() {
			return func(v reflect.Value) string {
				if tm := v.Interface().(time.Time); !tm.IsZero() {
					return tm.Format(time.RFC3339)
				}
				return ""
			}
		}
	}
	return nil
}
