package redisstore

import (
	"fmt"
	"reflect"
	"time"
)

// sameValue compares x and y deeply, instants by Equal (the core mixes UTC
// and Local locations; the store returns UTC).
func sameValue(x, y any) bool { return diffFields(x, y) == "" }

// diffFields lists the fields in which x and y differ.
func diffFields(x, y any) string {
	out := ""
	var walk func(p string, a, b reflect.Value)
	walk = func(p string, a, b reflect.Value) {
		switch {
		case a.Type() == reflect.TypeOf(time.Time{}):
			if !a.Interface().(time.Time).Equal(b.Interface().(time.Time)) {
				out += fmt.Sprintf("%s: %v != %v\n", p, a.Interface(), b.Interface())
			}
		case a.Kind() == reflect.Struct:
			for i := 0; i < a.NumField(); i++ {
				walk(p+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
			}
		case a.Kind() == reflect.Array, a.Kind() == reflect.Slice:
			if a.Len() != b.Len() {
				out += fmt.Sprintf("%s: len %d != %d\n", p, a.Len(), b.Len())
				return
			}
			for i := 0; i < a.Len(); i++ {
				walk(fmt.Sprintf("%s[%d]", p, i), a.Index(i), b.Index(i))
			}
		default:
			if !reflect.DeepEqual(a.Interface(), b.Interface()) {
				out += fmt.Sprintf("%s: %#v != %#v\n", p, a.Interface(), b.Interface())
			}
		}
	}
	walk("", reflect.ValueOf(x), reflect.ValueOf(y))
	return out
}
