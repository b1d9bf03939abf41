//! A minimal msgpack-rpc client for Neovim's `--listen` socket: just enough
//! to call `nvim_exec_lua` and read its answer. It works the same against
//! every Neovim version, unlike `nvim --remote-expr`.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(n) => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => {
            out.push(0xdb);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bin(b) => {
            out.push(0xc6);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            out.push(0xdd);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(pairs) => {
            out.push(0xdf);
            out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Ext(t, data) => {
            out.push(0xc9);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.push(*t as u8);
            out.extend_from_slice(data);
        }
    }
}

fn take<R: Read>(r: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn decode<R: Read>(r: &mut R) -> std::io::Result<Value> {
    let tag = take(r, 1)?[0];
    let len = |r: &mut R, n: usize| -> std::io::Result<usize> { Ok(be(&take(r, n)?) as usize) };
    Ok(match tag {
        0x00..=0x7f => Value::Int(i64::from(tag)),
        0x80..=0x8f => map(r, usize::from(tag & 0x0f))?,
        0x90..=0x9f => array(r, usize::from(tag & 0x0f))?,
        0xa0..=0xbf => string(r, usize::from(tag & 0x1f))?,
        0xc0 => Value::Nil,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xc4..=0xc6 => {
            let n = len(r, 1 << (tag - 0xc4))?;
            Value::Bin(take(r, n)?)
        }
        0xc7..=0xc9 => {
            let n = len(r, 1 << (tag - 0xc7))?;
            let t = take(r, 1)?[0] as i8;
            Value::Ext(t, take(r, n)?)
        }
        0xca => Value::Float(f64::from(f32::from_bits(be(&take(r, 4)?) as u32))),
        0xcb => Value::Float(f64::from_bits(be(&take(r, 8)?))),
        0xcc..=0xcf => Value::Int(be(&take(r, 1 << (tag - 0xcc))?) as i64),
        0xd0 => Value::Int(i64::from(take(r, 1)?[0] as i8)),
        0xd1 => Value::Int(i64::from(be(&take(r, 2)?) as u16 as i16)),
        0xd2 => Value::Int(i64::from(be(&take(r, 4)?) as u32 as i32)),
        0xd3 => Value::Int(be(&take(r, 8)?) as i64),
        0xd4..=0xd8 => {
            let t = take(r, 1)?[0] as i8;
            Value::Ext(t, take(r, 1 << (tag - 0xd4))?)
        }
        0xd9..=0xdb => {
            let n = len(r, 1 << (tag - 0xd9))?;
            string(r, n)?
        }
        0xdc | 0xdd => {
            let n = len(r, if tag == 0xdc { 2 } else { 4 })?;
            array(r, n)?
        }
        0xde | 0xdf => {
            let n = len(r, if tag == 0xde { 2 } else { 4 })?;
            map(r, n)?
        }
        0xe0..=0xff => Value::Int(i64::from(tag as i8)),
        0xc1 => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "msgpack: reserved byte 0xc1",
            ))
        }
    })
}

fn string<R: Read>(r: &mut R, n: usize) -> std::io::Result<Value> {
    Ok(Value::Str(
        String::from_utf8_lossy(&take(r, n)?).into_owned(),
    ))
}

fn array<R: Read>(r: &mut R, n: usize) -> std::io::Result<Value> {
    (0..n)
        .map(|_| decode(r))
        .collect::<std::io::Result<Vec<_>>>()
        .map(Value::Array)
}

fn map<R: Read>(r: &mut R, n: usize) -> std::io::Result<Value> {
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((decode(r)?, decode(r)?));
    }
    Ok(Value::Map(pairs))
}

pub struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: i64,
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
        let mut buf = Vec::new();
        encode(
            &Value::Array(vec![
                Value::Int(0),
                Value::Int(id),
                Value::Str(method.into()),
                Value::Array(args),
            ]),
            &mut buf,
        );
        self.writer
            .write_all(&buf)
            .map_err(|e| format!("rpc write: {e}"))?;
        loop {
            let msg = decode(&mut self.reader).map_err(|e| format!("rpc read: {e}"))?;
            let Value::Array(parts) = msg else {
                return Err(format!("rpc: unexpected message {msg:?}"));
            };
            // Notifications ([2, method, params]) are not ours: skip them.
            if parts.first() != Some(&Value::Int(1)) || parts.get(1) != Some(&Value::Int(id)) {
                continue;
            }
            return match (parts.get(2), parts.get(3)) {
                (Some(Value::Nil), Some(result)) => Ok(result.clone()),
                (Some(err), _) => Err(format!("{err:?}")),
                _ => Err("rpc: malformed response".into()),
            };
        }
    }
}
