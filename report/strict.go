package report

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

// decodeStrictSlow is DecodeStrict token by token; it words the refusal.
func decodeStrictSlow(body []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("DecodeStrict needs a non-nil pointer")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := walk(dec, rv.Type().Elem(), ""); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the body ended inside the value
		}
		return err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("after the JSON value: %v", err)
		}
		return fmt.Errorf("trailing data after the JSON value (%v)", tok)
	}
	// The walk proved every member name exact and unique, so the standard
	// decoder now binds each one to the field it names.
	std := json.NewDecoder(bytes.NewReader(body))
	std.DisallowUnknownFields()
	return std.Decode(v)
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walk reads one JSON value from dec and checks it against type t; path
// names the value in errors ("checks[0].name").
func walk(dec *json.Decoder, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return skip(dec)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t.Kind() {
	case reflect.Struct:
		if tok != json.Delim('{') {
			if tok == nil && path != "" {
				return nil
			}
			return fmt.Errorf("%s: want a JSON object, got %s", orTop(path), describe(tok))
		}
		return walkObject(dec, path, func(name string) (reflect.Type, error) {
			ft, ok := fieldsOf(t)[name]
			if !ok {
				return nil, unknownMember(t, name)
			}
			return ft, nil
		})
	case reflect.Map:
		if tok == nil {
			return nil
		}
		if tok != json.Delim('{') {
			return fmt.Errorf("%s: want a JSON object, got %s", orTop(path), describe(tok))
		}
		return walkObject(dec, path, func(string) (reflect.Type, error) { return t.Elem(), nil })
	case reflect.Slice, reflect.Array:
		if tok != json.Delim('[') {
			return nil // null, or a type mismatch the standard decoder reports
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return skipRest(dec, tok)
}

// walkObject reads the members of an object whose '{' was just read; member
// says which type a name takes, or why the name is refused.
func walkObject(dec *json.Decoder, path string, member func(string) (reflect.Type, error)) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name := tok.(string) // the decoder only yields strings as member names
		if seen[name] {
			return fmt.Errorf("%s: member %q given twice", orTop(path), name)
		}
		seen[name] = true
		ft, err := member(name)
		if err != nil {
			return fmt.Errorf("%s: %w", orTop(path), err)
		}
		if err := walk(dec, ft, join(path, name)); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// skip reads one whole JSON value.
func skip(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	return skipRest(dec, tok)
}

// skipRest reads the rest of a value whose first token was tok.
func skipRest(dec *json.Decoder, tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the exact JSON member names of struct t to their types,
// following encoding/json's rules for tags, "-" and unexported fields.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for n, typ := range fieldsOf(ft) {
					if _, shadowed := m[n]; !shadowed {
						m[n] = typ
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m
}

func unknownMember(t reflect.Type, name string) error {
	for known := range fieldsOf(t) {
		if strings.EqualFold(known, name) {
			return fmt.Errorf("member %q: unknown (names are case-sensitive: %q)", name, known)
		}
	}
	return fmt.Errorf("member %q: unknown", name)
}

func describe(tok json.Token) string {
	switch tok := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return string(tok)
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprint(tok)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func orTop(path string) string {
	if path == "" {
		return "body"
	}
	return path
}

// DecodeStrict decodes one JSON object into v (a pointer to a struct) and
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
func DecodeStrict(data []byte, v any) error {
	if n := keyNodeOf(reflect.TypeOf(v)); n != nil && bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) {
		s := strictScan{data: data}
		if s.value(n, 0) && s.end() && json.Unmarshal(data, v) == nil {
			return nil
		}
	}
	return decodeStrictSlow(data, v)
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
