//! How one audit event is written into a WAL record of the toolkit's own resource manager (the
//! audit journal): a small header, then length-prefixed text fields. The field count is in the
//! record, so that a newer build adds fields at the end and still reads older records.

/// The journal's record format; a record of another format is refused, not guessed at.
pub const FORMAT: u8 = 1;

const HEADER_LEN: usize = 1 + 8 + 4 + 8 + 1 + 1 + 4;

/// The fixed part of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// PostgreSQL timestamp (microseconds since 2000-01-01).
    pub event_time: i64,
    pub pid: i32,
    /// The backend's start, in seconds since the Unix epoch.
    pub session_start: i64,
    pub flags: u8,
    /// The top-level transaction's ID when the event was written (0: none): a record's own
    /// xl_xid is a subtransaction's inside a SAVEPOINT, which recovery_target_xid cannot use.
    pub transaction_id: u32,
}

impl Header {
    pub const SUCCESS: u8 = 1;
    pub const QUERY_TRUNCATED: u8 = 2;
    pub const FROM_APPLICATION: u8 = 4;

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum JournalError {
    UnknownFormat(u8),
    Truncated,
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::UnknownFormat(v) => {
                write!(f, "audit journal record of unknown format {v}")
            }
            JournalError::Truncated => f.write_str("audit journal record is truncated"),
        }
    }
}

impl std::error::Error for JournalError {}

/// The record for an event: header, field count, then each field as a u16 length and its bytes
/// (fields longer than 65,535 bytes are cut; the hooks cut them far shorter).
pub fn encode(header: &Header, fields: &[&[u8]]) -> Vec<u8> {
    let size = HEADER_LEN
        + 1
        + fields
            .iter()
            .map(|f| 2 + f.len().min(u16::MAX as usize))
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(FORMAT);
    out.extend_from_slice(&header.event_time.to_le_bytes());
    out.extend_from_slice(&header.pid.to_le_bytes());
    out.extend_from_slice(&header.session_start.to_le_bytes());
    out.push(header.flags);
    out.push(0); // reserved
    out.extend_from_slice(&header.transaction_id.to_le_bytes());
    out.push(u8::try_from(fields.len()).unwrap_or(u8::MAX));
    for field in fields.iter().take(u8::MAX as usize) {
        let n = field.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&field[..n]);
    }
    out
}

/// The header and fields of a record written by [`encode`].
pub fn decode(record: &[u8]) -> Result<(Header, Vec<&[u8]>), JournalError> {
    let take = |at: usize, n: usize| record.get(at..at + n).ok_or(JournalError::Truncated);
    let format = *record.first().ok_or(JournalError::Truncated)?;
    if format != FORMAT {
        return Err(JournalError::UnknownFormat(format));
    }
    let i64_at = |at| take(at, 8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()));
    let header = Header {
        event_time: i64_at(1)?,
        pid: i32::from_le_bytes(take(9, 4)?.try_into().unwrap_or_default()),
        session_start: i64_at(13)?,
        flags: take(21, 1)?[0],
        transaction_id: u32::from_le_bytes(take(23, 4)?.try_into().unwrap_or_default()),
    };
    let count = take(HEADER_LEN, 1)?[0] as usize;
    let mut at = HEADER_LEN + 1;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u16::from_le_bytes([take(at, 2)?[0], take(at, 2)?[1]]) as usize;
        fields.push(take(at + 2, n)?);
        at += 2 + n;
    }
    if at != record.len() {
        return Err(JournalError::Truncated);
    }
    Ok((header, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            event_time: 849_000_000_123_456,
            pid: 4242,
            session_start: 1_780_000_000,
            flags: Header::SUCCESS | Header::FROM_APPLICATION,
            transaction_id: 7_654_321,
        }
    }

    #[test]
    fn round_trip() {
        let fields: [&[u8]; 4] = [b"alice", b"", "épée".as_bytes(), b"CREATE TABLE t ()"];
        let record = encode(&header(), &fields);
        let (h, got) = decode(&record).unwrap();
        assert_eq!(h, header());
        assert!(h.has(Header::SUCCESS) && !h.has(Header::QUERY_TRUNCATED));
        assert_eq!(got, fields.to_vec());
    }

    #[test]
    fn long_fields_are_cut_not_corrupted() {
        let long = vec![b'x'; 70_000];
        let record = encode(&header(), &[&long, b"after"]);
        let (_, got) = decode(&record).unwrap();
        assert_eq!(got[0].len(), u16::MAX as usize);
        assert_eq!(got[1], b"after");
    }

    #[test]
    fn damaged_records_are_refused() {
        let record = encode(&header(), &[b"alice", b"db"]);
        for cut in 0..record.len() {
            assert!(decode(&record[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(JournalError::Truncated));
        let mut other = record;
        other[0] = 9;
        assert_eq!(decode(&other), Err(JournalError::UnknownFormat(9)));
    }
}
