//! The wire protocol nmsg speaks, as a reference (this module holds no code).
//!
//! nmsg speaks the protocol of the Node.js "Node Messenger" (nmsg, with its
//! router nmsg-rpc), so that a Rust process and a JavaScript process can talk
//! to each other. This page is the contract as nmsg implements it: what it
//! writes, what it accepts, and where it departs from the original. The
//! project's copy of messages written by the original, `tests/data/wire.json`,
//! is checked by `tests/wire_vectors.rs` (every one decodes to the meaning its
//! name states, and re-encodes to the original's bytes) and by the JavaScript
//! peer in `tests/js`.
//!
//! # 1. Framing
//!
//! A connection is a byte stream of messages, each a length prefix and a payload:
//!
//! ```text
//! length:  u32, big-endian (the original writes a signed int32: at most 2^31 - 1)
//! payload: `length` bytes, one message in the connection's codec
//! ```
//!
//! - The receiver bounds the length *before* it allocates: a prefix over the
//!   connection's maximum message size (16 MiB by default,
//!   [`framing::DEFAULT_MAX_MESSAGE_SIZE`](crate::framing::DEFAULT_MAX_MESSAGE_SIZE);
//!   never more than [`framing::MAX_MESSAGE_SIZE_LIMIT`](crate::framing::MAX_MESSAGE_SIZE_LIMIT))
//!   is a framing error that closes that connection, and only that one.
//! - A zero length is a framing error too, and so is a stream that ends inside
//!   a message.
//! - A payload the codec cannot read at all (not MsgPack, not JSON) is
//!   reported and skipped: the length prefix keeps the stream in step, so the
//!   next message is read as usual. (The original's contract allows closing the
//!   connection there; nmsg keeps it, so one bad message costs nothing else.)
//! - A message is handed on only once all `4 + length` bytes have arrived. (The
//!   original checks `buffered > length`, so it can hand on a message whose last
//!   bytes are still on their way; nmsg does not copy that.)
//! - The sender checks the same bound on every message it writes; a frame too
//!   large to send is an error for its emitter ([`EncodeError::TooLarge`](crate::EncodeError)),
//!   and nothing is written.
//!
//! # 2. Codecs
//!
//! Both ends use the same codec, set on each side (the protocol has no
//! negotiation).
//!
//! - **MsgPack** (the default, [`MsgPack`](crate::MsgPack)): a frame is a map
//!   with one-letter string keys, never a positional array.
//! - **JSON** ([`Json`](crate::Json)): UTF-8 text. Binary data has no JSON form:
//!   encoding it is an error ([`EncodeError::BinaryInJson`](crate::EncodeError)),
//!   never a silent conversion.
//!
//! Reading, in both codecs: a key that appears twice in one frame makes the
//! frame malformed; unknown keys are skipped; a nil/`null` value for an
//! optional key (`e`, `a`, `c`, `t`, `r`, `f`) counts as absent, as in the
//! original; data nests at most [`codec::MAX_DEPTH`](crate::codec::MAX_DEPTH)
//! (128) levels, and a deeper frame is malformed.
//!
//! ## JavaScript numbers
//!
//! JavaScript has one number type, a float64, and the MsgPack libraries of
//! Node.js write integers differently: msgpack-lite (every release of the
//! original uses it) writes each number outside the 32-bit integer range as a
//! float64 (`Date.now()` arrives as `1460592000000.0`), others write int64.
//! So nmsg's integer types (`i8` to `i64`, `u8` to `u64`, in arguments, typed
//! parameters and replies, and [`from_value`](crate::from_value)) accept a float
//! that is integral and in the type's range, as the integer it holds exactly;
//! any other float (`1.5`, NaN, out of range) is an argument error that names
//! the position, the value and the type (`argument 1: invalid type: floating
//! point `1.5`, expected i64`). Integers above 2^53 (`Number.MAX_SAFE_INTEGER`)
//! lose precision on the JavaScript side: a Node.js peer cannot hold them
//! exactly, whatever nmsg sends.
//!
//! # 3. Messages and frames
//!
//! A message is one **frame** (a map) or a **bulk**: an array of frames,
//! handled in order exactly as if they had come one by one. Anything else is
//! malformed. Each frame of a bulk is checked on its own, so one bad frame does
//! not take the others down.
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `i` | unsigned integer, required | the frame's id, unique among the sender's live frames |
//! | `e` | string | the event name; a frame with `e` is an **event** |
//! | `a` | array | the arguments that are data, in order, callbacks left out |
//! | `t` | number | seconds the sender keeps this frame's callbacks alive; absent means 15 s |
//! | `c` | array of unsigned integers | the positions, in the whole argument list, where callbacks stand; strictly ascending |
//! | `r` | unsigned integer | in a **response** (no `e`): the id of the frame whose callback it invokes |
//! | `f` | unsigned integer | in a response: that callback's position in frame `r`'s argument list |
//!
//! The whole argument list has `len(a) + len(c)` entries: walking positions
//! 0, 1, …, a position listed in `c` holds a callback, any other takes the
//! next element of `a`. So `{"i":4,"e":"ping","a":[{"key":"value"}],"c":[0,2,3]}`
//! is `ping(cb0, {key: "value"}, cb2, cb3)`.
//!
//! A frame is malformed ([`ProtocolError`](crate::ProtocolError)) when `i` is
//! missing or not an unsigned integer below 2^32; when it has no `e` and lacks
//! `r` or `f`; when `c` is not strictly ascending or points past the end of
//! the argument list; when `t` is not a finite, non-negative number; or when a
//! key has the wrong type. A malformed frame is reported to the router's error
//! hook and skipped; the connection goes on.
//!
//! ## What nmsg writes
//!
//! Keys in the original's order: `i`, `e`, `a`, `t`, `c` for an event, and
//! `i`, `a`, `t`, `c`, `r`, `f` for a response.
//!
//! - `i`: a counter per router, 1, 2, … up to [`frame::MAX_ID`](crate::frame::MAX_ID)
//!   (1,000,000,000), then back to 1, never 0. An id still held by a live frame
//!   (one whose callbacks are still waiting) is skipped.
//! - `a`: written whenever the frame has arguments, so a frame whose arguments
//!   are all callbacks has `a: []`, as the original writes it; a frame with no
//!   arguments has no `a`.
//! - `c`: written when the frame has callbacks.
//! - `t`: written, in seconds, when the frame has callbacks and its timeout is
//!   not the default 15 s; whole seconds as an integer (`"t":3`), others as a
//!   float. **Departure:** the original writes `t` only on frames with a data
//!   argument and a timeout other than its default; as its `emit` cannot set a
//!   timeout, in practice it never writes `t`. nmsg writes it wherever a
//!   callback's lifetime differs from the default, callback-only frames
//!   included, so the peer can read it ([`Args::timeout`](crate::Args::timeout)).
//!   nmsg reads `t` on any frame.
//!
//! # 4. Callbacks
//!
//! - Invoking the callback at position `p` of a received frame `X` sends the
//!   response `{i: new id, r: X, f: p, a: [...], c: [...]}`. Its arguments follow
//!   the same rules, so they may be callbacks too: the responder then keeps its
//!   response frame alive under its own id, and the peer answers it with
//!   `r` = that id. Nesting has no limit of depth.
//! - A callback runs at most once. Invoking a received callback a second time
//!   is a local error ([`Error::AlreadyInvoked`](crate::Error::AlreadyInvoked)),
//!   and nothing is sent.
//! - The sender keeps a frame with callbacks until every callback has run or
//!   its timeout plus a latency allowance (500 ms, as in the original:
//!   [`DEFAULT_LATENCY_ALLOWANCE`](crate::DEFAULT_LATENCY_ALLOWANCE)) has passed;
//!   then it forgets the frame and its waiting callbacks fail with
//!   [`Error::Timeout`](crate::Error::Timeout). A timeout of `Duration::MAX`
//!   keeps them for as long as the connection lives. At most
//!   [`DEFAULT_MAX_PENDING`](crate::DEFAULT_MAX_PENDING) (65,536) frames wait
//!   at once by default; emitting one more is an error, not an eviction.
//! - A response to an unknown or forgotten frame, to a position that holds data
//!   or nothing, or to a callback that already ran runs nothing and is reported
//!   as [`Error::StrayResponse`](crate::Error::StrayResponse). The frame stays
//!   live for its other callbacks.
//! - When a connection is lost, every callback waiting on it fails at once
//!   with a disconnect error, not at its timeout.
//! - The two directions of a connection count their ids independently.
//!
//! # 5. Routing an event
//!
//! 1. The wiretap, if set, sees every event first and can stop it.
//! 2. If a shared handler table ([`Api`](crate::Api)) has a method of that
//!    name, it alone handles the event.
//! 3. Otherwise the handler registered for the name runs, then the wildcard
//!    handler `*`, if any, with the event name prepended to the arguments.
//! 4. An event nobody handles is dropped, with a debug log and no report to
//!    the error hook (a peer may emit what this side does not serve); it is
//!    counted ([`Router::unhandled_events`](crate::Router::unhandled_events)).
//!
//! One handler per name: a second `on` for a name replaces the first, and
//! `off` removes it, as in the original. Handler errors and panics are reported
//! to the error hook; the connection goes on.
//!
//! # 6. Buffering
//!
//! A router's [`Buffering`](crate::Buffering) decides how its frames leave:
//!
//! - `Off` (the client's default): every frame is a message of its own (frames
//!   queued together still go out in one write to the socket).
//! - `Idle` (the server's default): whatever is queued when the connection is
//!   ready to write goes out as one bulk, a single frame as a bulk of one. It
//!   adds no delay.
//! - `Cycle(d)`: frames are collected for `d` after the first one, then sent as
//!   one bulk: the original's buffered router, with `d` = 10 ms there.
//!
//! A bulk never exceeds the maximum message size: what does not fit goes in the
//! next one.
//!
//! # 7. Connections
//!
//! - The client connects with exponential backoff: 1 s, 2 s, 4 s, … up to one
//!   hour between attempts, as the original ([`Backoff`](crate::Backoff)). A
//!   connection that lived at least the first delay resets the schedule; one
//!   that ends sooner counts as a failed attempt. The server retries binding
//!   its address the same way.
//! - What is emitted while the client is not connected waits in its outgoing
//!   queue and goes out in order once a connection is up. **Departure:** the
//!   original keeps up to 1,000 messages; nmsg's bound is 10,000 frames or
//!   64 MiB ([`DEFAULT_MAX_QUEUED_FRAMES`](crate::DEFAULT_MAX_QUEUED_FRAMES),
//!   [`DEFAULT_MAX_QUEUED_BYTES`](crate::DEFAULT_MAX_QUEUED_BYTES)), and a full
//!   queue is an error for the emitter ([`Error::QueueFull`](crate::Error::QueueFull)),
//!   or a wait with `emit_wait`, never a silent drop.
//!
//! # Sessions
//!
//! An extension of nmsg's, opt-in on both ends
//! ([`ClientBuilder::session`](crate::ClientBuilder::session),
//! [`ServerBuilder::session`](crate::ServerBuilder::session),
//! [`SessionOptions`](crate::SessionOptions)): exactly once, in order, both
//! ways, callbacks included, across broken connections within a session
//! window. A peer without it (the original) never receives an extension
//! frame unless it sent a `hello` itself.
//!
//! **Extension frames** are maps with the kind under `x` and no `i` (nmsg
//! writes `x` first, which lets a reader tell one by its first bytes; one
//! whose keys come in another order is still read), each a message of its own (never in a bulk), in the connection's
//! codec; unknown keys are ignored, and so are unknown kinds. In JSON:
//!
//! ```text
//! {"x":"hello","v":1}                                     a client's first message: a new session
//! {"x":"hello","v":1,"s":"5f0c…e1","n":1042}              resume session s, having received 1042 messages
//! {"x":"welcome","v":1,"s":"5f0c…e1","n":977,"z":"resumed"}  the server received 977 of the client's
//! {"x":"welcome","v":1,"s":"a9b1…07","n":0,"z":"new"}     a new session
//! {"x":"welcome","v":1,"s":"a9b1…07","n":0,"z":"expired"} the session asked for is gone: a new one
//! {"x":"ack","n":1043}                                    1043 data messages of this session received
//! {"x":"ping","n":1043}  {"x":"pong","n":980}             heartbeat (n acknowledges too)
//! ```
//!
//! (`s`: 128 random bits as 32 hex characters; `k` in a hello carries
//! credentials: [Authentication](#authentication).) The same in MessagePack: `{"x":"ack","n":1043}` is
//! `82 a1 78 a3 61 63 6b a1 6e cd 04 13`.
//!
//! **Numbering.** Within a session each direction numbers its data messages
//! (every message that is not an extension frame: one frame, or one bulk)
//! 1, 2, 3, … in the order written, across all the session's connections;
//! the number is the count, never written. A sender keeps each data message
//! it wrote, encoded as written, until the peer acknowledges it (`n` at or
//! above its number), in a replay buffer bounded by
//! [messages](crate::SessionOptions::max_replay_messages) (10,000),
//! [bytes](crate::SessionOptions::max_replay_bytes) (64 MiB) and
//! [age](crate::SessionOptions::max_replay_age) (2 minutes; older, the
//! connection is closed as unresponsive). Full, it takes nothing more from
//! its queue until acknowledgements come (checked before each take of the
//! queue, so one take, within the queue's own bounds, may go past it).
//! Nothing is dropped: the queue's own bounds hold what waits.
//!
//! **Acknowledgements** are cumulative: sent along with outgoing data once
//! 32 messages are unacknowledged, else alone after the
//! [ack delay](crate::SessionOptions::ack_delay) (100 ms), or once
//! [ack count](crate::SessionOptions::ack_count) (2,048) messages, or an
//! eighth of the replay bound's bytes (8 MiB), are unacknowledged.
//!
//! **Handshake.** A client with sessions writes `hello` first on every
//! connection and nothing else before the `welcome`; no welcome within the
//! [hello timeout](crate::SessionOptions::hello_timeout) (5 s) closes the
//! connection with [`Error::SessionsUnsupported`](crate::Error::SessionsUnsupported)'s
//! message, and the client backs off. A server with sessions reads the first
//! message of a new connection (within the
//! [hello wait](crate::SessionOptions::hello_wait), 1 s) before it makes a
//! socket: a `hello` makes a session socket, which answers `welcome` before
//! any data; anything else (or nothing within the wait) a plain socket,
//! served as by a server without sessions.
//!
//! **Resume.** After a break the client reconnects at once (a connection
//! whose handshake completed resets the backoff) and says hello with its
//! session id and count. The server keeps a session socket whose connection
//! broke, its router, handlers' state and queue, for the
//! [window](crate::SessionOptions::window) (2 minutes); emits to it queue.
//! If it has the session, it hands the new stream to the socket (the old
//! one, if still open, is dropped), answers `welcome` `resumed` with its
//! count, and each side first writes again, in order, what it kept above
//! the other's count, then goes on. A client opens a connection only once
//! it gave up on the last, so the server takes a session's connections in
//! the order it accepted them: a hello it reads after that of a newer
//! connection of the session (a connection cut before its welcome, read
//! late by a busy server) is stale, and its connection is closed without a
//! word; the session goes on. Within a session a break fails nothing:
//! pending replies wait (their timeouts run on), callbacks stay callable,
//! responses queued go out on the next connection of the session. A count
//! above what the sender wrote, or below what it dropped already, cannot
//! resume: the session ends.
//!
//! **A lost session** (the window passed, the server restarted): the server
//! answers `welcome` `expired` with a new session. The client fails what
//! waits for answers with [`Error::SessionLost`](crate::Error::SessionLost),
//! drops the responses queued for the old session (counted in a
//! [`ClientEvent::Lost`](crate::ClientEvent::Lost)), and of the messages it
//! wrote and had not seen acknowledged writes the plain emits (events
//! without callbacks) again on the new session, possibly a second time, or
//! drops them ([`Unacked`](crate::Unacked)); the rest it drops. Both counts
//! come in [`ClientEvent::SessionLost`](crate::ClientEvent::SessionLost).
//!
//! **Heartbeat** (session connections only): a side that wrote nothing for
//! the [heartbeat interval](crate::SessionOptions::heartbeat_interval) (25 s)
//! writes `ping`, answered at once with `pong`; nothing received within the
//! [heartbeat timeout](crate::SessionOptions::heartbeat_timeout) (20 s) of a
//! ping closes the connection, and the client resumes. Plain connections rely
//! on TCP keepalive.
//!
//! ## Authentication
//!
//! Opt-in on both ends ([`ClientBuilder::credentials`](crate::ClientBuilder::credentials),
//! [`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate)),
//! with or without sessions. The client's credentials, any value (a token
//! string in most setups), ride on the `hello` under `k`; the client asks
//! for them anew on every connection. A client without sessions says a
//! hello of its own, marked `"p":1` (a plain connection: no session is
//! asked for, and none is made even by a server with sessions), and writes
//! nothing else before the answer, a `welcome` without a session:
//!
//! ```text
//! {"x":"hello","v":1,"p":1,"k":"s3cr3t"}                  a plain client's hello with a token
//! {"x":"welcome","v":1}                                   accepted: a plain connection
//! {"x":"hello","v":1,"k":"s3cr3t"}                        a session client's hello, new session
//! {"x":"hello","v":1,"s":"5f0c…e1","n":1042,"k":"s3cr3t"} resuming, with a fresh token
//! {"x":"deny","m":"unknown token"}                        rejected (m: the server's reason); it closes
//! ```
//!
//! A session client's hello is answered by the session's `welcome`, as
//! without authentication. In MessagePack, `{"x":"welcome","v":1}` is
//! `82 a1 78 a7 77 65 6c 63 6f 6d 65 a1 76 01`.
//!
//! A server that authenticates reads the first message of every new
//! connection, within the [auth timeout](crate::ServerBuilder::auth_timeout)
//! (5 s) and up to [64 KiB](crate::ServerBuilder::max_credentials_size),
//! and makes no socket before its authenticator accepted the credentials
//! (bounded by the same timeout). It answers `deny` and closes when the
//! authenticator rejects them or the hello has none; it closes without a
//! word a connection whose first message is not a hello (a peer without
//! authentication, such as the original, which would not understand a
//! `deny`), or that says nothing within the timeout. A server without
//! authentication ignores `k`; one without sessions nor authentication does
//! not read hellos, so that a client with credentials gets no answer and
//! says so after its [auth timeout](crate::ClientBuilder::auth_timeout).
//! A rejected client reports [`Error::AuthRejected`](crate::Error::AuthRejected)
//! and backs off: a rejection counts as a failed attempt.
//!
//! # 8. Releases of the original
//!
//! Everything above is the original's later dialect (nmsg-rpc from mid-April
//! 2016 on), the one `tests/data/wire.json` holds. Its earlier releases
//! differ, and nmsg reads every one of them:
//!
//! | release | responses | bulks | buffering | callbacks kept |
//! |---|---|---|---|---|
//! | nmsg 1.0.2 (nmsg-rpc 1.0.6, msgpack-lite 0.1.17), the first | `e: ""` beside `r` and `f` | the map `{"b": [frames]}` | always, client and server, every 5 ms | 5 s |
//! | nmsg-tcp (the later TCP stack) | `e: ""` beside `r` and `f` | an array | optional | 15 s |
//! | the later router (`wire.json`) | no `e` | an array | optional | 15 s |
//!
//! What nmsg reads, from any peer: a frame with `r` and an empty or absent
//! `e` is a response; a message that is a map of the one key `b` holding an
//! array is a bulk of those frames, as an array is. In JSON:
//!
//! ```text
//! {"i":3,"e":"","a":["hello"],"r":2,"f":1}                  a response to frame 2, position 1
//! {"b":[{"i":7,"e":"a","a":[1]},{"i":8,"e":"b","a":["two"],"c":[1]}]}   a bulk of two frames
//! ```
//!
//! What nmsg writes: responses never carry `e`; bulks in the form its peer uses ([`BulkForm`](crate::BulkForm)): arrays
//! until the peer sends a bulk, then the form of the peer's last bulk. The
//! first release sends only bulks, so a server hears its form before it
//! answers; a buffering client that may send before it hears from such a
//! server fixes the keyed form with
//! [`RouterBuilder::bulk_form`](crate::RouterBuilder::bulk_form) (an
//! unbuffered client sends single frames, which every release reads). The
//! first release's TCP server writes every message it receives back to its
//! sender: its peer sees its own events come back, and ignores them as events
//! it has no handler for (section 5), without reports. Its echo of a
//! *response* cannot be told from a response, and may reach a live callback
//! of the peer's own whose frame has the same id (both sides count ids from 1),
//! as it does with that release's own clients: with such a server, calls that
//! the server answers through callbacks are safe, a client answering the
//! server's callbacks is not.
//!
//! Every release's MsgPack encoder (msgpack-lite) writes integers outside the
//! 32-bit range as float64, which nmsg's integer types accept ([JavaScript
//! numbers](#javascript-numbers)); its first release (msgpack-lite 0.1.17)
//! writes characters outside the Basic Multilingual Plane as CESU-8 (each as
//! two 3-byte surrogate sequences), which is not valid UTF-8: nmsg decodes
//! such a string argument to the characters meant (other invalid UTF-8 is
//! still an error; event names are not rewritten).
