package healthswitch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
)

// decodeStrict decodes one JSON object into v (a pointer to a struct) and
// refuses anything encoding/json would let through silently: unknown keys,
// keys spelled in another case than their field ("Healthy" for "healthy",
// which json.Unmarshal matches case-insensitively), a key given twice in
// one object (json keeps the last one), and anything after the value.
//
// Keys are checked against the exact JSON names of every struct field
// reachable from v's type, so v must not contain maps (whose keys are free).
func decodeStrict(data []byte, v any) error {
	if err := scanKeys(data, jsonNames(reflect.TypeOf(v))); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// scanKeys walks the tokens of data: every object key must be one of names
// and appear once in its object.
func scanKeys(data []byte, names map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	// One entry per open object or array: the keys seen so far (nil for an
	// array), and whether the next string token of an object is a key.
	type frame struct {
		keys   map[string]bool
		expKey bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].keys != nil && stack[top].expKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:top]
				continue
			}
			key := tok.(string) // the decoder only yields strings in key position
			if !names[key] {
				return fmt.Errorf("unknown key %q (keys are case-sensitive)", key)
			}
			if stack[top].keys[key] {
				return fmt.Errorf("key %q given twice", key)
			}
			stack[top].keys[key] = true
			stack[top].expKey = false
			continue
		}
		if top >= 0 && stack[top].keys != nil {
			stack[top].expKey = true // this token is a value: a key comes next
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]bool{}, expKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim(']'):
			stack = stack[:top]
		}
		if len(stack) == 0 {
			// The first value is complete; decodeStrict rejects what follows.
			return nil
		}
	}
}

var jsonNamesCache sync.Map // reflect.Type -> map[string]bool

// jsonNames lists the JSON names of every struct field reachable from t.
func jsonNames(t reflect.Type) map[string]bool {
	if m, ok := jsonNamesCache.Load(t); ok {
		return m.(map[string]bool)
	}
	names := map[string]bool{}
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch name {
			case "-":
				continue
			case "":
				name = f.Name
			}
			names[name] = true
			walk(f.Type)
		}
	}
	walk(t)
	jsonNamesCache.Store(t, names)
	return names
}
