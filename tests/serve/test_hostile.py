"""The server under hostile requests, by class: numbers beyond the float range, temperatures that
underflow, unpaired surrogates, foreign Host headers, non-JSON bodies, private settings, HEAD, one
logged traceback per 500; and a property test: any JSON body gets a 4xx or a reply, never a 5xx."""

from __future__ import annotations

import json
import logging

import pytest

from . import LiveServer, assert_error, reference_reply

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

MAX_TOKENS = 6
HUGE = 10**400  # beyond the float range
JSON = {"Content-Type": "application/json"}


def user(text: str = "Hello there!") -> dict:
    return {"role": "user", "content": text}


def post(url: str, body, headers=None, **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{url}/v1/chat/completions",
        content=content,
        headers={**JSON, **(headers or {})},
        timeout=60,
        **kwargs,
    )


@pytest.fixture(scope="module")
def server(model_dir):
    from gpt2chat.serve import ServeSettings, create_app

    settings = ServeSettings(max_new_tokens=MAX_TOKENS, max_tokens_limit=16, device="cpu")
    with LiveServer(create_app(model_dir, settings)) as live:
        yield live


def healthy(url: str) -> dict:
    state = httpx.get(f"{url}/health", timeout=10).json()
    assert state["status"] == "ok" and state["active"] == 0 and state["failed"] == 0
    return state


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    "field", ["max_tokens", "max_completion_tokens", "temperature", "top_p", "seed"]
)
@pytest.mark.parametrize("value", [HUGE, -HUGE])
def test_numbers_beyond_the_float_range_are_a_400(server, field, value):
    body = {"messages": [user()], field: value}
    raw = json.dumps(body).encode()  # a 401-digit integer literal
    assert_error(post(server.url, raw), 400, field)
    healthy(server.url)


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"NaN", b"Infinity"])
def test_non_finite_numbers_are_a_400(server, literal):
    raw = b'{"messages": [{"role": "user", "content": "x"}], "temperature": ' + literal + b"}"
    assert_error(post(server.url, raw), 400)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-4])
def test_temperatures_below_the_minimum_decode_greedily_in_both_modes(
    server, reference, temperature, stream
):
    messages = [user("How was your weekend?")]
    greedy, _ = reference_reply(reference, messages, do_sample=False, max_new_tokens=MAX_TOKENS)
    body = {"messages": messages, "temperature": temperature, "stream": stream}
    response = post(server.url, body)
    assert response.status_code == 200, response.text
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        chunks = [json.loads(e) for e in events if e != "[DONE]"]
        assert not any("error" in c for c in chunks), chunks
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text == greedy
    healthy(server.url)


# --------------------------------------------------------------------------- text
SURROGATES = ["\ud800", "a\udfffb", "\udc00\ud800"]


@pytest.mark.parametrize("bad", SURROGATES)
@pytest.mark.parametrize(
    ("where", "param"),
    [
        ("last", "messages[2].content"),
        ("history", "messages[1].content"),
        ("system", "messages[0].content"),
        ("role", "messages[1].role"),
        ("persona", "persona"),
        ("model", "model"),
    ],
)
def test_unpaired_surrogates_anywhere_are_a_400_naming_the_field(server, bad, where, param):
    system = {"role": "system", "content": bad if where == "system" else "I like tea."}
    history = {"role": bad if where == "role" else "assistant", "content": "Hi."}
    if where == "history":
        history["content"] = bad
    last = user(bad if where == "last" else "How are you?")
    body: dict = {"messages": [system, history, last]}
    if where == "persona":
        body = {"messages": [user("Hi."), history, last], "persona": bad}
    if where == "model":
        body["model"] = bad
    raw = json.dumps(body).encode()  # JSON's "\ud800" escapes: valid JSON, invalid Unicode
    error = assert_error(post(server.url, raw), 400, param)
    assert "surrogate" in error["message"]
    healthy(server.url)


# --------------------------------------------------------------------------- HTTP
def test_foreign_host_headers_are_refused(server):
    for host in ("evil.example.com", "attacker.test:8000", "127.0.0.1.nip.io"):
        error = assert_error(post(server.url, {"messages": [user()]}, {"Host": host}), 400)
        assert error["code"] == "invalid_host"
        assert_error(httpx.get(f"{server.url}/api/settings", headers={"Host": host}), 400)
    for host in ("localhost", "LOCALHOST:8000", "127.0.0.1", "[::1]:80"):
        response = httpx.get(f"{server.url}/health", headers={"Host": host})
        assert response.status_code == 200, (host, response.text)


def test_allowed_hosts_for_a_deployment(model_dir):
    from gpt2chat.serve import ServeSettings, create_app

    settings = ServeSettings(allowed_hosts=["chat.example.com"], max_new_tokens=2, device="cpu")
    with LiveServer(create_app(model_dir, settings)) as live:
        ok = httpx.get(f"{live.url}/health", headers={"Host": "chat.example.com"})
        assert ok.status_code == 200
        assert_error(httpx.get(f"{live.url}/health", headers={"Host": "other.example"}), 400)
        assert_error(httpx.get(f"{live.url}/health"), 400)  # 127.0.0.1 is not in the list
    anyone = ServeSettings(allowed_hosts=["*"], max_new_tokens=2, device="cpu")
    with LiveServer(create_app(model_dir, anyone)) as live:
        assert httpx.get(f"{live.url}/health", headers={"Host": "x.test"}).status_code == 200
    with pytest.raises(ValueError, match="allowed_hosts"):
        ServeSettings(allowed_hosts=[" "])


def test_cli_allows_its_own_host_and_the_listed_names():
    from gpt2chat.cli.serve import ServeArguments

    args = ServeArguments(model="m", host="10.0.0.5", allowed_hosts="chat.example.com, b.test")
    assert args.settings().allowed_hosts == [
        "localhost", "127.0.0.1", "::1", "10.0.0.5", "chat.example.com", "b.test",
    ]  # fmt: skip
    assert "0.0.0.0" not in ServeArguments(model="m", host="0.0.0.0").settings().allowed_hosts


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_post_bodies_must_be_json(server, content_type):
    before = healthy(server.url)
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=json.dumps({"messages": [user()]}),
        headers=headers,
        timeout=30,
    )
    assert_error(response, 415, code="unsupported_media_type")
    after = healthy(server.url)
    assert after["completed"] == before["completed"]  # nothing was generated
    ok = post(
        server.url, {"messages": [user()]}, {"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/api/settings", "/v1/models", "/static/app.js"])
def test_head_on_get_routes(server, path):
    get = httpx.get(f"{server.url}{path}")
    head = httpx.head(f"{server.url}{path}")
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_an_unexpected_error_is_one_500_logged_once(model_dir, caplog, monkeypatch):
    from gpt2chat.serve import ServeSettings, create_app

    app = create_app(model_dir, ServeSettings(max_new_tokens=2, device="cpu"))

    def broken(request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.engine, "prepare", broken)
    with LiveServer(app) as live, caplog.at_level(logging.INFO):
        error = assert_error(post(live.url, {"messages": [user()]}), 500)
        assert error["type"] == "server_error" and "a bug" not in error["message"]
        assert httpx.get(f"{live.url}/health").status_code == 200
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]


def test_key_protected_routes(model_dir):
    from gpt2chat.serve import ServeSettings, create_app

    settings = ServeSettings(api_key="k3y", persona="I am a secret persona.", device="cpu")
    key = {"Authorization": "Bearer k3y"}
    with LiveServer(create_app(model_dir, settings)) as live:
        url = live.url
        assert httpx.get(f"{url}/").status_code == 200  # the page holds nothing private
        assert httpx.get(f"{url}/static/app.js").status_code == 200
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        assert "queued" in httpx.get(f"{url}/health", headers=key).json()
        for path in ("/api/settings", "/v1/models", "/v1/models/tiny-chat"):
            error = assert_error(httpx.get(f"{url}{path}"), 401, code="invalid_api_key")
            assert "secret persona" not in json.dumps(error)
            assert httpx.get(f"{url}{path}", headers={"Authorization": "Bearer k3y"}).is_success
        assert httpx.get(f"{url}/api/settings", headers=key).json()["persona"].startswith("I am")
        assert_error(post(url, {"messages": [user()]}), 401)
        latin1 = {"Authorization": "Bearer \u00e9".encode("latin-1")}
        assert_error(post(url, {"messages": [user()]}, latin1), 401)


# --------------------------------------------------------------------------- properties
KEYS = [
    "messages", "model", "persona", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "seed", "n", "stream", "stream_options", "stop",
]  # fmt: skip
texts = st.text(st.characters(), max_size=12)  # any code point, surrogates included
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([HUGE, -HUGE, 2**63, -(2**63) - 1, 0, 1, 2, 16, 17])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-40, 5e-324, 1e-3, 0.5, 2.0, 2.0000001])
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", ""]) | texts
messages = st.lists(
    st.fixed_dictionaries({"role": roles, "content": texts | json_values})
    | json_values.filter(lambda v: not isinstance(v, dict)),
    max_size=4,
).map(lambda ms: [*ms, user()] if len(ms) % 2 else ms)
bodies = (
    st.fixed_dictionaries(
        {"messages": messages},
        optional={key: json_values for key in KEYS if key != "messages"},
    )
    | json_values
)


@hypothesis.settings(
    max_examples=150, suppress_health_check=list(hypothesis.HealthCheck), deadline=None
)
@hypothesis.given(body=bodies)
def test_any_json_body_gets_a_4xx_or_a_reply_never_a_5xx(server, body):
    try:
        raw = json.dumps(body).encode()
    except ValueError:  # a huge integer beyond Python's str conversion limit
        return
    response = post(server.url, raw)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
    elif isinstance(body, dict) and body.get("stream") is True:
        assert '"error"' not in response.text
    else:
        assert isinstance(response.json()["choices"][0]["message"]["content"], str)


@hypothesis.settings(
    max_examples=60, suppress_health_check=list(hypothesis.HealthCheck), deadline=None
)
@hypothesis.given(raw=st.binary(max_size=64))
def test_any_bytes_get_a_4xx(server, raw):
    response = post(server.url, raw)
    assert 400 <= response.status_code < 500, response.text


def test_healthy_after_the_properties(server):
    healthy(server.url)


@pytest.mark.parametrize("field", ["messages", "message", "temperature", "model", "stop"])
def test_json_nested_up_to_and_past_the_recursion_limit_is_a_400(server, field):
    """Depths on both sides of what the server's JSON parser accepts: never a 5xx."""
    for depth in range(850, 1100, 25):
        nested = "[" * depth + "]" * depth
        if field == "messages":
            raw = '{"messages": ' + nested + "}"
        elif field == "message":
            raw = '{"messages": [' + nested + "]}"
        else:
            raw = '{"messages": [{"role": "user", "content": "x"}], "' + field + '": ' + nested
            raw += "}"
        assert_error(post(server.url, raw.encode()), 400)
    healthy(server.url)


def test_a_huge_list_of_messages_is_refused_before_validation(server):
    raw = json.dumps({"messages": [{}] * 100_000}).encode()
    assert_error(post(server.url, raw), 400, "messages", "too_many_messages")


def test_host_names_are_parsed_strictly():
    from gpt2chat.serve.guard import host_name

    assert host_name("[::1]:8000") == "::1" and host_name("[::1]") == "::1"
    assert host_name("Example.COM.:80") == "example.com"
    for trick in ("[::1].evil.com", "[::1]evil", "[::1]:80x", "[::1"):
        assert host_name(trick) not in ("::1", "localhost", "127.0.0.1"), trick


def test_host_and_content_type_tricks(server):
    body = json.dumps({"messages": [user()]}).encode()
    for host in ("[::1].evil.com", "[::1]anything", "[::1]:80.evil.com"):
        assert_error(post(server.url, body, {"Host": host}), 400, code="invalid_host")
    two_types = [("Content-Type", "text/plain"), ("Content-Type", "application/json")]
    response = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers=two_types)
    assert_error(response, 400, code="invalid_content_type")


@pytest.mark.parametrize(
    "value", ["bytes=abc", "items=0-1", "bytes=5-1", "bytes=999999-", "bytes=-0"]
)
@pytest.mark.parametrize("path", ["/", "/static/app.js"])
def test_range_headers_get_the_whole_file(server, path, value):
    whole = httpx.get(f"{server.url}{path}")
    ranged = httpx.get(f"{server.url}{path}", headers={"Range": value})
    assert ranged.status_code == 200 and ranged.content == whole.content


def test_api_keys_compare_as_the_bytes_clients_send(model_dir):
    from gpt2chat.serve import ServeSettings, create_app

    for key, good, bad in [
        ("cl\u00e9", "cl\u00e9".encode(), "cl\u00e9".encode("latin-1")),
        ("k\udcff", b"k\xff", b"k\xc3\xbf"),  # a key read from non-UTF-8 bytes keeps them
    ]:
        settings = ServeSettings(api_key=key, max_new_tokens=2, device="cpu")
        with LiveServer(create_app(model_dir, settings)) as live:
            ok = httpx.get(f"{live.url}/v1/models", headers={"Authorization": b"Bearer " + good})
            assert ok.status_code == 200, ok.text
            wrong = httpx.get(f"{live.url}/v1/models", headers={"Authorization": b"Bearer " + bad})
            assert_error(wrong, 401)
            assert httpx.get(
                f"{live.url}/health", headers={"Authorization": b"Bearer " + bad}
            ).json() == {"status": "ok"}
    with pytest.raises(ValueError, match="api_key"):
        ServeSettings(api_key="\ud800")
