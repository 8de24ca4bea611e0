package healthswitch

import (
	"bytes"
	"encoding"
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
//
// A body that is plainly fine (every key the exact name of a field of the
// struct it belongs to, once, nothing after the value) takes one scan and
// json.Unmarshal. Anything else goes the token by token way of
// decodeStrictSlow, which also words the error, so a refusal reads the same
// whichever way the body came.
func decodeStrict(data []byte, v any) error {
	if n := keyNodeOf(reflect.TypeOf(v)); n != nil {
		s := strictScan{data: data}
		if s.value(n, 0) && s.end() && json.Unmarshal(data, v) == nil {
			return nil
		}
	}
	return decodeStrictSlow(data, v)
}

// decodeStrictSlow is decodeStrict token by token.
func decodeStrictSlow(data []byte, v any) error {
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

// keyNode is what keys an object may have where a struct is decoded: the
// exact JSON names of its fields, each with its bit in the object's
// seen-set and the node of its value (nil: no object is expected there).
type keyNode struct {
	fields map[string]keyField
}

type keyField struct {
	bit int
	sub *keyNode
}

var keyNodeCache sync.Map // reflect.Type -> *keyNode (nil: always the slow way)

// keyNodeOf is the node of the struct t decodes into, or nil when t is not
// plainly a struct whose keys json resolves as the fast scan does (embedded
// fields, custom unmarshalers, names json would not take as they are).
func keyNodeOf(t reflect.Type) *keyNode {
	if n, ok := keyNodeCache.Load(t); ok {
		return n.(*keyNode)
	}
	n := buildKeyNode(t, map[reflect.Type]*keyNode{})
	keyNodeCache.Store(t, n)
	return n
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func buildKeyNode(t reflect.Type, building map[reflect.Type]*keyNode) *keyNode {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	for _, u := range []reflect.Type{t, reflect.PointerTo(t)} {
		if u.Implements(jsonUnmarshaler) || u.Implements(textUnmarshaler) {
			return nil
		}
	}
	if n, ok := building[t]; ok {
		return n
	}
	n := &keyNode{fields: map[string]keyField{}}
	building[t] = n
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			return nil
		}
		name, ok := jsonName(f)
		if !ok {
			continue
		}
		if _, dup := n.fields[name]; dup || strings.TrimFunc(name, plainKeyRune) != "" {
			return nil
		}
		n.fields[name] = keyField{bit: len(n.fields), sub: buildKeyNode(f.Type, building)}
	}
	return n
}

func plainKeyRune(r rune) bool {
	return r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// strictScan walks a JSON text once, checking the keys of every object
// against the node of the struct it decodes into. It only says whether the
// text is plainly fine: values are checked as far as finding where they
// end, json.Unmarshal checks the rest.
type strictScan struct {
	data []byte
	i    int
}

// maxScanDepth bounds the recursion; deeper texts go the slow way.
const maxScanDepth = 100

func (s *strictScan) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end reports whether only white space follows.
func (s *strictScan) end() bool {
	s.space()
	return s.i == len(s.data)
}

// next skips white space and reports whether the next byte is c, taking it.
func (s *strictScan) next(c byte) bool {
	s.space()
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// value scans one value; n is the node of an object found there.
func (s *strictScan) value(n *keyNode, depth int) bool {
	s.space()
	if s.i == len(s.data) || depth > maxScanDepth {
		return false
	}
	switch s.data[s.i] {
	case '{':
		s.i++
		return n != nil && s.object(n, depth)
	case '[':
		s.i++
		if s.next(']') {
			return true
		}
		for {
			if !s.value(n, depth+1) {
				return false
			}
			if s.next(']') {
				return true
			}
			if !s.next(',') {
				return false
			}
		}
	case '"':
		_, _, ok := s.str()
		return ok
	}
	start := s.i
	for s.i < len(s.data) && literalByte(s.data[s.i]) {
		s.i++
	}
	return s.i > start
}

func literalByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
}

// object scans the members of an object after its '{'.
func (s *strictScan) object(n *keyNode, depth int) bool {
	var small [2]uint64
	seen := small[:]
	if w := (len(n.fields) + 63) / 64; w > len(small) {
		seen = make([]uint64, w)
	}
	if s.next('}') {
		return true
	}
	for {
		s.space()
		if s.i == len(s.data) || s.data[s.i] != '"' {
			return false
		}
		key, escaped, ok := s.str()
		if !ok || escaped {
			return false
		}
		f, known := n.fields[string(key)]
		if !known || seen[f.bit/64]&(1<<(f.bit%64)) != 0 {
			return false
		}
		seen[f.bit/64] |= 1 << (f.bit % 64)
		if !s.next(':') || !s.value(f.sub, depth+1) {
			return false
		}
		if s.next('}') {
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}

// str scans a string at its opening quote: its bytes as written, whether
// they hold an escape (a key spelled in escapes is not plain), and whether
// the string ends.
func (s *strictScan) str() (raw []byte, escaped, ok bool) {
	s.i++
	start := s.i
	for s.i < len(s.data) {
		switch c := s.data[s.i]; {
		case c == '"':
			s.i++
			return s.data[start : s.i-1], escaped, true
		case c == '\\':
			escaped = true
			s.i++ // the escaped byte; json.Unmarshal checks the escape
		case c < 0x20:
			return nil, escaped, false
		}
		s.i++
	}
	return nil, escaped, false
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
			if name, ok := jsonName(f); ok {
				names[name] = true
				walk(f.Type)
			}
		}
	}
	walk(t)
	jsonNamesCache.Store(t, names)
	return names
}

// jsonName is the key of a struct field in JSON; false for a field JSON
// leaves out.
func jsonName(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return "", false
	case "":
		name = f.Name
	}
	return name, true
}
