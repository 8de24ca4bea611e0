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

// DecodeStrict decodes body, one JSON object, into v (a pointer to a struct),
// refusing what encoding/json lets through on its own: a member whose name
// matches a field only when case is ignored ("Healthy" for "healthy"), an
// unknown member, a member given twice, and anything after the object. It is
// the one decoder for what crosses the wire signed: reports (Decode) and the
// bodies of operator requests.
//
// Nested structs, slices, arrays and maps are held to the same rules; a type
// with its own UnmarshalJSON (time.Time) is left to it.
func DecodeStrict(body []byte, v any) error {
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
