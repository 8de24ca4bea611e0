package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"password", "http://admin:hunter2@10.0.0.1:8080/healthz", "http://admin:xxxxx@10.0.0.1:8080/healthz"},
		{"password with @ and :", "https://u:p@ss:w@rd@h/x", "https://u:xxxxx@h/x"},
		{"user only stays", "postgres://postgres@db/app", "postgres://postgres@db/app"},
		{"no credentials", "http://127.0.0.1:8080/healthz?verbose=1", "http://127.0.0.1:8080/healthz?verbose=1"},
		{"secret query values", "https://h/p?token=abc&x=1&api_key=k&X-Amz-Signature=s#frag",
			"https://h/p?token=xxxxx&x=1&api_key=xxxxx&X-Amz-Signature=xxxxx#frag"},
		{"access_token, sig, auth, pass", "http://h/?access_token=a;sig=b&auth=c&pass=d&passage=e",
			"http://h/?access_token=xxxxx;sig=xxxxx&auth=xxxxx&pass=xxxxx&passage=e"},
		{"@ in the path is not user information", "http://h/a@b:c", "http://h/a@b:c"},
		{"not a URL", "hunter2", "hunter2"},
		{"a URL inside a URL", "http://proxy/?url=http://u:p@h/&next=https://v:q@h2", "http://proxy/?url=http://u:xxxxx@h/&next=https://v:xxxxx@h2"},
		{"postgres URL", "postgres://app:s3cret@db:5432/orders?sslmode=disable&sslpassword=x",
			"postgres://app:xxxxx@db:5432/orders?sslmode=disable&sslpassword=xxxxx"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := URL(tc.in); got != tc.want {
				t.Errorf("URL(%q)\n = %q\nwant %q", tc.in, got, tc.want)
			}
			if got := URL(URL(tc.in)); got != tc.want {
				t.Errorf("twice: %q", got)
			}
		})
	}
}

func TestDSN(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"URL form", "postgres://app:s3cret@db/orders", "postgres://app:xxxxx@db/orders"},
		{"key=value", "host=db user=app password=s3cret dbname=orders", "host=db user=app password=xxxxx dbname=orders"},
		{"quoted value", `host=db password='s3 cr\'et' user=app`, "host=db password='xxxxx' user=app"},
		{"spaces around =", "host=db password = s3cret user=app", "host=db password = xxxxx user=app"},
		{"sslpassword", "host=db sslpassword=x sslmode=verify-full", "host=db sslpassword=xxxxx sslmode=verify-full"},
		{"MySQL style", "app:s3cret@tcp(db:3306)/orders", "app:s3cret@tcp(db:3306)/orders"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DSN(tc.in); got != tc.want {
				t.Errorf("DSN(%q)\n = %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestText(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"URL in an error", `Get "http://admin:hunter2@127.0.0.1:9/healthz?token=t": dial tcp 127.0.0.1:9: connect: connection refused`,
			`Get "http://admin:xxxxx@127.0.0.1:9/healthz?token=xxxxx": dial tcp 127.0.0.1:9: connect: connection refused`},
		{"DSN in an error", "cannot parse `host=db password=s3cret`: failed", "cannot parse `host=db password=xxxxx`: failed"},
		{"password: value", "login failed, password: hunter2", "login failed, password: xxxxx"},
		{"key_file: is not a secret", "key_file: key file: open /etc/k: no such file", "key_file: key file: open /etc/k: no such file"},
		{"plain detail", "HTTP 200", "HTTP 200"},
		{"two URLs", "a https://u:p@h1/ b https://v:q@h2/", "a https://u:xxxxx@h1/ b https://v:xxxxx@h2/"},
		{"JSON", `{"password":"hunter2","user":"u"}`, `{"password":"xxxxx","user":"u"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Text(tc.in); got != tc.want {
				t.Errorf("Text(%q)\n = %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSecret(t *testing.T) {
	for _, name := range []string{"token", "TOKEN", "api_key", "apiKey", "X-Api-Key", "client_secret", "access_token", "passwd", "pwd", "sig", "Signature", "auth", "sslpassword"} {
		if !Secret(name) {
			t.Errorf("%s is not secret", name)
		}
	}
	for _, name := range []string{"host", "user", "monkey", "passage", "author", "sslmode", "dbname"} {
		if Secret(name) {
			t.Errorf("%s is secret", name)
		}
	}
}

// Redaction never panics, is stable once applied, and what it hides stays
// hidden.
func FuzzText(f *testing.F) {
	f.Add("http://u:hunter2@h/?token=hunter2")
	f.Add("a://u:hunter2@h a://u:hunter2@h/a://u:hunter2@")
	f.Add("host=h password='hunter2'")
	f.Fuzz(func(t *testing.T, s string) {
		once := Text(s)
		if twice := Text(once); twice != once {
			t.Fatalf("not stable: %q -> %q -> %q", s, once, twice)
		}
		if strings.Contains(once, "a://u:hunter2@") {
			t.Fatalf("a URL password survived: %q -> %q", s, once)
		}
	})
}

// The cases the DNS server relies on for its status, events and logs.
func TestPluginCases(t *testing.T) {
	for in, want := range map[string]string{
		"http://bob:hunter2@192.0.2.1:8080/healthz":                                      "http://bob:xxxxx@192.0.2.1:8080/healthz",
		"https://192.0.2.1/healthz?token=abc&x=1":                                        "https://192.0.2.1/healthz?token=xxxxx&x=1",
		"https://h/p?API_KEY=abc&access_token=t&sig=s&page=2":                            "https://h/p?API_KEY=xxxxx&access_token=xxxxx&sig=xxxxx&page=2",
		"tcp://198.51.100.10:443":                                                        "tcp://198.51.100.10:443",
		"https://h/cb#access_token=abc&state=1":                                          "https://h/cb#access_token=xxxxx&state=1",
		"https://h/p?Password=x&passwd=y&pass=z&auth=a&secret=s":                         "https://h/p?Password=xxxxx&passwd=xxxxx&pass=xxxxx&auth=xxxxx&secret=xxxxx",
		"postgres://app:s3cret@db:5432/app?sslmode=disable":                              "postgres://app:xxxxx@db:5432/app?sslmode=disable",
		"http://onlyuser@h/":                                                             "http://onlyuser@h/",
		"https://h/p?signature=abc&X-Amz-Credential=c&plain=keep":                        "https://h/p?signature=xxxxx&X-Amz-Credential=xxxxx&plain=keep",
		`http get: Get "http://bob:***@192.0.2.1/healthz?token=abc": connection refused`: `http get: Get "http://bob:xxxxx@192.0.2.1/healthz?token=xxxxx": connection refused`,
		`host=db user=app password=s3cret dbname=app`:                                    `host=db user=app password=xxxxx dbname=app`,
		`dial app:s3cret@tcp(127.0.0.1:3306)/app: refused`:                               `dial app:xxxxx@tcp(127.0.0.1:3306)/app: refused`,
		`Authorization: Bearer abcdefghijklmnop`:                                         `Authorization: Bearer xxxxx`,
		`sidecar: web: status 503; db: timeout`:                                          `sidecar: web: status 503; db: timeout`,
	} {
		if got := Text(in); got != want {
			t.Errorf("Text(%q)\n got %q\nwant %q", in, got, want)
		}
		if again := Text(Text(in)); again != want {
			t.Errorf("Text is not idempotent on %q: %q", in, again)
		}
	}
}
