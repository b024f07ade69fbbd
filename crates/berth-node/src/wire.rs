//! What crosses the wire: JSON forms of the executor's types, the run
//! spec's frame at the head of a run request, and the frames of a run's
//! response.
//!
//! The executor's own types stay free of serialisation; these mirror them
//! field for field, so that a field added there fails to compile here
//! rather than silently going missing on the wire.

use std::time::Duration;

use berth_core::{Mode, RequestMeta, TaskId};
use berth_executor::{
    ExecError, ExecutorStatus, Exit, InstanceCount, PoolSettings, ResponseHead, RunOutcome, RunSpec,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The largest run spec a node accepts, as JSON.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// The largest payload of one response frame. Output is cut into frames
/// no bigger than this, so that a reader never holds more than one.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Kind byte and big-endian length.
const FRAME_HEADER: usize = 5;

/// Durations travel as whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A [`RunSpec`] without its cancel token, which only means something in
/// the process that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRunSpec {
    pub task_id: TaskId,
    pub tenant: String,
    pub function: String,
    pub version: i64,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub request_env: Vec<(String, String)>,
    pub request: RequestMeta,
    pub cpu_millis: u32,
    pub memory_mb: u32,
    pub timeout_ms: u64,
    pub mode: Mode,
    pub run_as_root: bool,
    pub pool: WirePool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePool {
    pub concurrency: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    pub idle_timeout_ms: u64,
    pub max_queue: u32,
    pub queue_timeout_ms: u64,
}

impl From<&RunSpec> for WireRunSpec {
    fn from(s: &RunSpec) -> Self {
        let RunSpec {
            task_id,
            tenant,
            function,
            version,
            image,
            command,
            env,
            request_env,
            request,
            cpu_millis,
            memory_mb,
            timeout,
            mode,
            run_as_root,
            pool,
            cancel: _,
        } = s;
        Self {
            task_id: *task_id,
            tenant: tenant.clone(),
            function: function.clone(),
            version: *version,
            image: image.clone(),
            command: command.clone(),
            env: env.clone(),
            request_env: request_env.clone(),
            request: request.clone(),
            cpu_millis: *cpu_millis,
            memory_mb: *memory_mb,
            timeout_ms: millis(*timeout),
            mode: *mode,
            run_as_root: *run_as_root,
            pool: WirePool::from(pool),
        }
    }
}

impl WireRunSpec {
    /// The spec, with a cancel token of the receiving side's own.
    pub fn into_spec(self, cancel: CancellationToken) -> RunSpec {
        RunSpec {
            task_id: self.task_id,
            tenant: self.tenant,
            function: self.function,
            version: self.version,
            image: self.image,
            command: self.command,
            env: self.env,
            request_env: self.request_env,
            request: self.request,
            cpu_millis: self.cpu_millis,
            memory_mb: self.memory_mb,
            timeout: Duration::from_millis(self.timeout_ms),
            mode: self.mode,
            run_as_root: self.run_as_root,
            pool: self.pool.into(),
            cancel,
        }
    }
}

impl From<&PoolSettings> for WirePool {
    fn from(p: &PoolSettings) -> Self {
        let PoolSettings {
            concurrency,
            min_instances,
            max_instances,
            idle_timeout,
            max_queue,
            queue_timeout,
        } = p;
        Self {
            concurrency: *concurrency,
            min_instances: *min_instances,
            max_instances: *max_instances,
            idle_timeout_ms: millis(*idle_timeout),
            max_queue: *max_queue,
            queue_timeout_ms: millis(*queue_timeout),
        }
    }
}

impl From<WirePool> for PoolSettings {
    fn from(p: WirePool) -> Self {
        Self {
            concurrency: p.concurrency,
            min_instances: p.min_instances,
            max_instances: p.max_instances,
            idle_timeout: Duration::from_millis(p.idle_timeout_ms),
            max_queue: p.max_queue,
            queue_timeout: Duration::from_millis(p.queue_timeout_ms),
        }
    }
}

/// An error as a node reports it: a stable `code`, the message for
/// people, and the variant's fields. Codes that are not an
/// [`ExecError`]'s (`unauthorized`, `wrong_node`, `bad_request`) are the
/// protocol's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
    /// The variant's text, when it has one besides the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub mod codes {
    pub const IMAGE_NOT_FOUND: &str = "image_not_found";
    pub const PULL_FAILED: &str = "pull_failed";
    pub const ENGINE_UNAVAILABLE: &str = "engine_unavailable";
    pub const NO_CAPACITY: &str = "no_capacity";
    pub const BUSY: &str = "busy";
    pub const INSTANCE: &str = "instance";
    pub const ENGINE: &str = "engine";
    pub const EXECUTOR_LOST: &str = "executor_lost";
    pub const RECLAIMED: &str = "reclaimed";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const WRONG_NODE: &str = "wrong_node";
    pub const BAD_REQUEST: &str = "bad_request";
}

impl WireError {
    /// An error of the protocol itself, not of the executor.
    pub fn protocol(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            image: None,
            running: None,
            detail: None,
        }
    }

    /// The executor error this stands for; `None` for the protocol's own
    /// codes, a code from a newer node, or missing fields.
    pub fn into_exec_error(self) -> Option<ExecError> {
        let detail = self.detail;
        Some(match self.code.as_str() {
            codes::IMAGE_NOT_FOUND => ExecError::ImageNotFound(self.image?),
            codes::PULL_FAILED => ExecError::PullFailed {
                image: self.image?,
                message: detail?,
            },
            codes::ENGINE_UNAVAILABLE => ExecError::EngineUnavailable(detail?),
            codes::NO_CAPACITY => ExecError::NoCapacity(usize::try_from(self.running?).ok()?),
            codes::BUSY => ExecError::Busy(detail?),
            codes::INSTANCE => ExecError::Instance(detail?),
            codes::ENGINE => ExecError::Engine(detail?),
            codes::EXECUTOR_LOST => ExecError::ExecutorLost(detail?),
            codes::RECLAIMED => ExecError::Reclaimed(detail?),
            _ => return None,
        })
    }
}

impl From<&ExecError> for WireError {
    fn from(e: &ExecError) -> Self {
        let mut w = WireError::protocol("", e.to_string());
        let (code, image, running, detail) = match e {
            ExecError::ImageNotFound(image) => (codes::IMAGE_NOT_FOUND, Some(image), None, None),
            ExecError::PullFailed { image, message } => {
                (codes::PULL_FAILED, Some(image), None, Some(message))
            }
            ExecError::EngineUnavailable(m) => (codes::ENGINE_UNAVAILABLE, None, None, Some(m)),
            ExecError::NoCapacity(n) => (codes::NO_CAPACITY, None, Some(*n as u64), None),
            ExecError::Busy(m) => (codes::BUSY, None, None, Some(m)),
            ExecError::Instance(m) => (codes::INSTANCE, None, None, Some(m)),
            ExecError::Engine(m) => (codes::ENGINE, None, None, Some(m)),
            ExecError::ExecutorLost(m) => (codes::EXECUTOR_LOST, None, None, Some(m)),
            ExecError::Reclaimed(m) => (codes::RECLAIMED, None, None, Some(m)),
        };
        w.code = code.into();
        w.image = image.cloned();
        w.running = running;
        w.detail = detail.cloned();
        w
    }
}

/// The body of every answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: WireError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireExit {
    Code { code: i64 },
    OomKilled,
    TimedOut,
    Cancelled,
    CallerGone,
    InstanceLost { reason: String },
}

impl From<&Exit> for WireExit {
    fn from(e: &Exit) -> Self {
        match e {
            Exit::Code(code) => WireExit::Code { code: *code },
            Exit::OomKilled => WireExit::OomKilled,
            Exit::TimedOut => WireExit::TimedOut,
            Exit::Cancelled => WireExit::Cancelled,
            Exit::CallerGone => WireExit::CallerGone,
            Exit::InstanceLost(reason) => WireExit::InstanceLost {
                reason: reason.clone(),
            },
        }
    }
}

impl From<WireExit> for Exit {
    fn from(e: WireExit) -> Self {
        match e {
            WireExit::Code { code } => Exit::Code(code),
            WireExit::OomKilled => Exit::OomKilled,
            WireExit::TimedOut => Exit::TimedOut,
            WireExit::Cancelled => Exit::Cancelled,
            WireExit::CallerGone => Exit::CallerGone,
            WireExit::InstanceLost { reason } => Exit::InstanceLost(reason),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireOutcome {
    pub exit: WireExit,
    pub stderr_tail: String,
    pub queued_ms: i64,
    pub pull_ms: Option<i64>,
    pub start_ms: i64,
    pub run_ms: i64,
    pub cpu_ms: Option<i64>,
    pub peak_memory_bytes: Option<i64>,
}

impl From<&RunOutcome> for WireOutcome {
    fn from(o: &RunOutcome) -> Self {
        let RunOutcome {
            exit,
            stderr_tail,
            queued_ms,
            pull_ms,
            start_ms,
            run_ms,
            cpu_ms,
            peak_memory_bytes,
        } = o;
        Self {
            exit: exit.into(),
            stderr_tail: stderr_tail.clone(),
            queued_ms: *queued_ms,
            pull_ms: *pull_ms,
            start_ms: *start_ms,
            run_ms: *run_ms,
            cpu_ms: *cpu_ms,
            peak_memory_bytes: *peak_memory_bytes,
        }
    }
}

impl From<WireOutcome> for RunOutcome {
    fn from(o: WireOutcome) -> Self {
        Self {
            exit: o.exit.into(),
            stderr_tail: o.stderr_tail,
            queued_ms: o.queued_ms,
            pull_ms: o.pull_ms,
            start_ms: o.start_ms,
            run_ms: o.run_ms,
            cpu_ms: o.cpu_ms,
            peak_memory_bytes: o.peak_memory_bytes,
        }
    }
}

/// The payload of a DONE frame: how the attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireDone {
    Ok(WireOutcome),
    Err(WireError),
}

impl From<&Result<RunOutcome, ExecError>> for WireDone {
    fn from(r: &Result<RunOutcome, ExecError>) -> Self {
        match r {
            Ok(o) => WireDone::Ok(o.into()),
            Err(e) => WireDone::Err(e.into()),
        }
    }
}

impl WireDone {
    /// `None` when the node reported an error this side does not know.
    pub fn into_result(self) -> Option<Result<RunOutcome, ExecError>> {
        match self {
            WireDone::Ok(o) => Some(Ok(o.into())),
            WireDone::Err(e) => e.into_exec_error().map(Err),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl From<&ResponseHead> for WireHead {
    fn from(h: &ResponseHead) -> Self {
        Self {
            status: h.status,
            headers: h.headers.clone(),
        }
    }
}

impl From<WireHead> for ResponseHead {
    fn from(h: WireHead) -> Self {
        Self {
            status: h.status,
            headers: h.headers,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStatus {
    pub id: String,
    pub capacity: u64,
    pub running: u64,
    #[serde(default)]
    pub cpu_millis_allocated: u64,
    #[serde(default)]
    pub memory_mb_allocated: u64,
    pub instances: Vec<WireInstances>,
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInstances {
    pub tenant: String,
    pub function: String,
    pub version: i64,
    pub ready: u64,
    pub busy: u64,
    pub starting: u64,
    pub queued: u64,
}

impl From<&ExecutorStatus> for WireStatus {
    fn from(s: &ExecutorStatus) -> Self {
        let ExecutorStatus {
            id,
            capacity,
            running,
            cpu_millis_allocated,
            memory_mb_allocated,
            instances,
            healthy,
        } = s;
        Self {
            id: id.clone(),
            capacity: *capacity as u64,
            running: *running as u64,
            cpu_millis_allocated: *cpu_millis_allocated,
            memory_mb_allocated: *memory_mb_allocated,
            instances: instances.iter().map(WireInstances::from).collect(),
            healthy: *healthy,
        }
    }
}

impl From<WireStatus> for ExecutorStatus {
    fn from(s: WireStatus) -> Self {
        Self {
            id: s.id,
            capacity: usize_of(s.capacity),
            running: usize_of(s.running),
            cpu_millis_allocated: s.cpu_millis_allocated,
            memory_mb_allocated: s.memory_mb_allocated,
            instances: s.instances.into_iter().map(InstanceCount::from).collect(),
            healthy: s.healthy,
        }
    }
}

impl From<&InstanceCount> for WireInstances {
    fn from(i: &InstanceCount) -> Self {
        let InstanceCount {
            tenant,
            function,
            version,
            ready,
            busy,
            starting,
            queued,
        } = i;
        Self {
            tenant: tenant.clone(),
            function: function.clone(),
            version: *version,
            ready: *ready as u64,
            busy: *busy as u64,
            starting: *starting as u64,
            queued: *queued as u64,
        }
    }
}

impl From<WireInstances> for InstanceCount {
    fn from(i: WireInstances) -> Self {
        Self {
            tenant: i.tenant,
            function: i.function,
            version: i.version,
            ready: usize_of(i.ready),
            busy: usize_of(i.busy),
            starting: usize_of(i.starting),
            queued: usize_of(i.queued),
        }
    }
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveResponse {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReapResponse {
    pub removed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireRequest {
    pub tenant: String,
    pub function: String,
    pub keep: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the run spec is {0} bytes, over the {MAX_SPEC_BYTES} byte limit")]
    TooLarge(usize),
    #[error("malformed run spec: {0}")]
    Json(#[from] serde_json::Error),
}

/// The spec frame that opens a run request: its JSON behind a big-endian
/// u32 length.
pub fn spec_frame(spec: &WireRunSpec) -> Result<Bytes, SpecError> {
    let json = serde_json::to_vec(spec)?;
    if json.len() > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge(json.len()));
    }
    let mut frame = BytesMut::with_capacity(4 + json.len());
    frame.put_u32(json.len() as u32);
    frame.extend_from_slice(&json);
    Ok(frame.freeze())
}

/// What a spec frame's length prefix announces, refused early when over
/// the limit so that nothing bigger is ever read.
pub fn spec_len(prefix: [u8; 4]) -> Result<usize, SpecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge(len));
    }
    Ok(len)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// http mode's status line and headers, as [`WireHead`] JSON.
    Head = 1,
    Stdout = 2,
    Stderr = 3,
    /// Empty: proof of life while the attempt says nothing.
    Keepalive = 4,
    /// How the attempt ended, as [`WireDone`] JSON; always the last.
    Done = 5,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Head,
            2 => FrameKind::Stdout,
            3 => FrameKind::Stderr,
            4 => FrameKind::Keepalive,
            5 => FrameKind::Done,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a frame of {0} bytes, over the {MAX_FRAME_BYTES} byte limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {kind:?} frame: {source}")]
    Malformed {
        kind: FrameKind,
        source: serde_json::Error,
    },
}

/// One frame, header and payload in one buffer. Payloads over
/// [`MAX_FRAME_BYTES`] are the caller's to split (see [`output_frames`]).
pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= MAX_FRAME_BYTES);
    let mut frame = BytesMut::with_capacity(FRAME_HEADER + payload.len());
    frame.put_u8(kind as u8);
    frame.put_u32(payload.len() as u32);
    frame.extend_from_slice(payload);
    frame.freeze()
}

/// A chunk of output as frames, cut to the frame limit.
pub fn output_frames(kind: FrameKind, chunk: &[u8]) -> impl Iterator<Item = Bytes> + '_ {
    chunk
        .chunks(MAX_FRAME_BYTES)
        .map(move |piece| encode_frame(kind, piece))
}

/// A frame of JSON. The types sent this way are plain data, which
/// serde_json always serialises.
pub fn json_frame<T: Serialize>(kind: FrameKind, value: &T) -> Bytes {
    let json = serde_json::to_vec(value).unwrap_or_default();
    encode_frame(kind, &json)
}

impl Frame {
    pub fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|source| FrameError::Malformed {
            kind: self.kind,
            source,
        })
    }
}

/// Cuts a byte stream into frames. Holds at most one frame and the
/// network chunk it came in.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(self.buf[0]).ok_or(FrameError::UnknownKind(self.buf[0]))?;
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < FRAME_HEADER + len {
            self.buf.reserve(FRAME_HEADER + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { kind, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_executor::testing::run_spec;

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        serde_json::from_slice(&serde_json::to_vec(value).unwrap()).unwrap()
    }

    #[test]
    fn run_spec_round_trips_without_its_token() {
        let mut spec = run_spec("f", &["fail", "3", "x"]);
        spec.env = vec![("A".into(), "1".into())];
        spec.request_env = vec![("QUERY_STRING".into(), "q=1".into())];
        spec.request.headers = vec![("x-a".into(), "b".into())];
        spec.request.content_length = Some(12);
        spec.mode = Mode::Http;
        spec.run_as_root = true;
        spec.timeout = Duration::from_millis(1500);
        spec.pool.queue_timeout = Duration::from_millis(250);
        spec.pool.max_queue = 7;
        let wire = WireRunSpec::from(&spec);
        let back = round_trip(&wire).into_spec(CancellationToken::new());
        assert_eq!(WireRunSpec::from(&back), wire);
        assert_eq!(back.timeout, spec.timeout);
        assert_eq!(back.pool, spec.pool);
        assert_eq!(back.request, spec.request);
        assert!(!back.cancel.is_cancelled());
    }

    #[test]
    fn every_exec_error_round_trips() {
        let all = [
            ExecError::ImageNotFound("img".into()),
            ExecError::PullFailed {
                image: "img".into(),
                message: "denied".into(),
            },
            ExecError::EngineUnavailable("down".into()),
            ExecError::NoCapacity(4),
            ExecError::Busy("2 busy".into()),
            ExecError::Instance("died".into()),
            ExecError::Engine("oops".into()),
            ExecError::ExecutorLost("gone".into()),
            ExecError::Reclaimed("taken back".into()),
        ];
        let mut codes = std::collections::HashSet::new();
        for e in all {
            let wire = WireError::from(&e);
            assert_eq!(wire.message, e.to_string());
            assert!(
                codes.insert(wire.code.clone()),
                "duplicate code {}",
                wire.code
            );
            let back = round_trip(&ErrorBody { error: wire })
                .error
                .into_exec_error()
                .unwrap();
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
            assert_eq!(back.is_refusal(), e.is_refusal());
        }
    }

    #[test]
    fn protocol_codes_are_not_exec_errors() {
        let w = WireError::protocol(codes::UNAUTHORIZED, "no");
        assert!(w.into_exec_error().is_none());
        let mut w = WireError::from(&ExecError::NoCapacity(1));
        w.running = None;
        assert!(w.into_exec_error().is_none());
    }

    #[test]
    fn outcomes_and_exits_round_trip() {
        for exit in [
            Exit::Code(-3),
            Exit::OomKilled,
            Exit::TimedOut,
            Exit::Cancelled,
            Exit::CallerGone,
            Exit::InstanceLost("agent died".into()),
        ] {
            let outcome = RunOutcome {
                exit: exit.clone(),
                stderr_tail: "tail".into(),
                queued_ms: 1,
                pull_ms: Some(2),
                start_ms: 3,
                run_ms: 4,
                cpu_ms: None,
                peak_memory_bytes: Some(5),
            };
            let done = round_trip(&WireDone::from(&Ok(outcome.clone())));
            let back = done.into_result().unwrap().unwrap();
            assert_eq!(back.exit, exit);
            assert_eq!(WireOutcome::from(&back), WireOutcome::from(&outcome));
        }
        let err = round_trip(&WireDone::from(&Err(ExecError::Busy("b".into()))));
        assert!(matches!(
            err.into_result(),
            Some(Err(ExecError::Busy(m))) if m == "b"
        ));
    }

    #[test]
    fn status_and_head_round_trip() {
        let status = ExecutorStatus {
            id: "n1".into(),
            capacity: 8,
            running: 2,
            cpu_millis_allocated: 1500,
            memory_mb_allocated: 512,
            instances: vec![InstanceCount {
                tenant: "t".into(),
                function: "f".into(),
                version: 3,
                ready: 1,
                busy: 2,
                starting: 3,
                queued: 4,
            }],
            healthy: true,
        };
        let wire = WireStatus::from(&status);
        let back = ExecutorStatus::from(round_trip(&wire));
        assert_eq!(WireStatus::from(&back), wire);

        let head = ResponseHead {
            status: 201,
            headers: vec![("a".into(), "b".into())],
        };
        let back: ResponseHead = round_trip(&WireHead::from(&head)).into();
        assert_eq!(back, head);
    }

    #[test]
    fn frames_decode_across_chunk_boundaries() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&encode_frame(FrameKind::Stdout, b"hello"));
        stream.extend_from_slice(&encode_frame(FrameKind::Keepalive, b""));
        stream.extend_from_slice(&encode_frame(FrameKind::Stderr, b"err"));
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for byte in stream {
            dec.push(&[byte]);
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Frame {
                    kind: FrameKind::Stdout,
                    payload: Bytes::from_static(b"hello")
                },
                Frame {
                    kind: FrameKind::Keepalive,
                    payload: Bytes::new()
                },
                Frame {
                    kind: FrameKind::Stderr,
                    payload: Bytes::from_static(b"err")
                },
            ]
        );
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let mut dec = FrameDecoder::default();
        let mut header = vec![FrameKind::Stdout as u8];
        header.extend_from_slice(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes());
        dec.push(&header);
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge(_))));

        let mut dec = FrameDecoder::default();
        dec.push(&[9, 0, 0, 0, 0]);
        assert!(matches!(dec.next_frame(), Err(FrameError::UnknownKind(9))));
    }

    #[test]
    fn big_output_is_cut_to_the_frame_limit() {
        let chunk = vec![7u8; MAX_FRAME_BYTES * 2 + 10];
        let frames: Vec<_> = output_frames(FrameKind::Stdout, &chunk).collect();
        assert_eq!(frames.len(), 3);
        let mut dec = FrameDecoder::default();
        let mut total = 0;
        for f in frames {
            dec.push(&f);
            total += dec.next_frame().unwrap().unwrap().payload.len();
        }
        assert_eq!(total, chunk.len());
    }

    #[test]
    fn spec_frames_are_capped() {
        let spec = WireRunSpec::from(&run_spec("f", &[]));
        let frame = spec_frame(&spec).unwrap();
        let len = spec_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert!(matches!(
            spec_len(((MAX_SPEC_BYTES + 1) as u32).to_be_bytes()),
            Err(SpecError::TooLarge(_))
        ));
        let mut big = spec;
        big.env = vec![("X".into(), "y".repeat(MAX_SPEC_BYTES))];
        assert!(matches!(spec_frame(&big), Err(SpecError::TooLarge(_))));
    }
}
