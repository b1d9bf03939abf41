//! A minimal msgpack-rpc client for Neovim's `--listen` socket (msgpack by
//! rmpv): just enough to call `nvim_exec_lua` and read its answer. It works
//! the same against every Neovim version, unlike `nvim --remote-expr`.

pub use rmpv::Value;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u32,
}

impl Rpc {
    pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<Rpc> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        Ok(Rpc {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// Call an API function; Err carries Neovim's error message.
    pub fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Value::Array(vec![
            Value::from(0),
            Value::from(id),
            Value::from(method),
            Value::Array(args),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &request).map_err(|e| format!("rpc encode: {e}"))?;
        self.writer
            .write_all(&buf)
            .map_err(|e| format!("rpc write: {e}"))?;
        loop {
            let msg =
                rmpv::decode::read_value(&mut self.reader).map_err(|e| format!("rpc read: {e}"))?;
            let Value::Array(parts) = msg else {
                return Err(format!("rpc: unexpected message {msg}"));
            };
            // Notifications ([2, method, params]) are not ours: skip them.
            if parts.first().and_then(Value::as_u64) != Some(1)
                || parts.get(1).and_then(Value::as_u64) != Some(u64::from(id))
            {
                continue;
            }
            return match (parts.get(2), parts.get(3)) {
                (Some(Value::Nil), Some(result)) => Ok(result.clone()),
                (Some(err), _) => Err(format!("{err}")),
                _ => Err("rpc: malformed response".into()),
            };
        }
    }
}
