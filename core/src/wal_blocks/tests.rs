use super::*;

const PAGE: usize = PAGE_SIZE;
const SYSTEM: u64 = 7_311_111_111_111_111_111;

fn rel(relation: u32) -> RelFile {
    RelFile {
        tablespace: DEFAULT_TABLESPACE,
        database: 5,
        relation,
    }
}

/// A block reference to write: relation, fork, block, and whether it carries a compressed
/// image with a hole (the header that adds a field).
struct Ref(RelFile, u8, u32, bool);

/// A WAL record laid out as PostgreSQL does, with its CRC.
fn record(rmid: u8, info: u8, refs: &[Ref], main: &[u8]) -> Vec<u8> {
    let (mut headers, mut payload) = (Vec::new(), Vec::new());
    let mut last: Option<RelFile> = None;
    for (id, Ref(r, fork, block, image)) in refs.iter().enumerate() {
        let same = last == Some(*r);
        let mut flags = fork | if same { 0x80 } else { 0 };
        if *image {
            flags |= 0x10;
        }
        headers.extend([id as u8, flags]);
        headers.extend(3u16.to_le_bytes()); // data length
        if *image {
            headers.extend(100u16.to_le_bytes()); // image length
            headers.extend(40u16.to_le_bytes()); // hole offset
            headers.push(0x01 | 0x10); // a hole, zstd
            headers.extend(8000u16.to_le_bytes()); // hole length
            payload.extend([7u8; 100]);
        }
        if !same {
            for v in [r.tablespace, r.database, r.relation] {
                headers.extend(v.to_le_bytes());
            }
        }
        headers.extend(block.to_le_bytes());
        payload.extend([1u8, 2, 3]);
        last = Some(*r);
    }
    if main.is_empty() {
        // No main data, no header for it (a switch record is 24 bytes).
    } else if main.len() < 256 {
        headers.extend([255u8, main.len() as u8]);
    } else {
        headers.push(254);
        headers.extend((main.len() as u32).to_le_bytes());
    }
    payload.extend_from_slice(main);
    let total = 24 + headers.len() + payload.len();
    let mut rec = Vec::new();
    rec.extend((total as u32).to_le_bytes());
    rec.extend(42u32.to_le_bytes()); // xid
    rec.extend(0u64.to_le_bytes()); // prev
    rec.extend([info, rmid, 0, 0]);
    rec.extend(0u32.to_le_bytes()); // crc, below
    rec.extend(headers);
    rec.extend(payload);
    let crc = crc32c(&[&rec[24..], &rec[..20]]);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

fn heap(refs: &[Ref]) -> Vec<u8> {
    record(10, 0x00, refs, &[9u8; 20])
}

/// WAL as the server writes it, from LSN `segment_size` (segment 1) on.
struct Wal {
    segment_size: usize,
    bytes: Vec<u8>,
    /// The LSN of the last record written: the next one's xl_prev.
    last: u64,
}

impl Wal {
    fn new(segment_size: usize) -> Wal {
        Wal {
            segment_size,
            bytes: Vec::new(),
            last: 0,
        }
    }

    fn lsn(&self) -> u64 {
        (self.segment_size + self.bytes.len()) as u64
    }

    fn page_header(&mut self, rem_len: usize) {
        let long = self.bytes.len().is_multiple_of(self.segment_size);
        let info: u16 = u16::from(rem_len > 0) | if long { 2 } else { 0 };
        let address = self.lsn();
        let mut h = Vec::new();
        h.extend(0xD110u16.to_le_bytes());
        h.extend(info.to_le_bytes());
        h.extend(1u32.to_le_bytes());
        h.extend(address.to_le_bytes());
        h.extend((rem_len as u32).to_le_bytes());
        h.extend([0u8; 4]);
        if long {
            h.extend(SYSTEM.to_le_bytes());
            h.extend((self.segment_size as u32).to_le_bytes());
            h.extend((PAGE as u32).to_le_bytes());
        }
        self.bytes.extend(h);
    }

    fn write(&mut self, rec: &[u8]) -> u64 {
        if self.bytes.len().is_multiple_of(PAGE) {
            self.page_header(0);
        }
        let at = self.lsn();
        let mut rec = rec.to_vec();
        rec[8..16].copy_from_slice(&self.last.to_le_bytes());
        let crc = crc32c(&[&rec[24..], &rec[..20]]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        self.last = at;
        let mut left = &rec[..];
        loop {
            let room = PAGE - self.bytes.len() % PAGE;
            let n = room.min(left.len());
            self.bytes.extend_from_slice(&left[..n]);
            left = &left[n..];
            if left.is_empty() {
                break;
            }
            self.page_header(left.len());
        }
        while !self.bytes.len().is_multiple_of(8) {
            self.bytes.push(0);
        }
        at
    }

    /// The segments, the last padded with zeros (never-written pages).
    fn segments(&self) -> Vec<Vec<u8>> {
        let mut all = self.bytes.clone();
        all.resize(all.len().next_multiple_of(self.segment_size), 0);
        all.chunks(self.segment_size).map(<[u8]>::to_vec).collect()
    }

    fn store(&self, dir: &Path) {
        for (i, seg) in self.segments().iter().enumerate() {
            let name = segment_file_name(1, i as u64 + 1, self.segment_size as u64);
            std::fs::write(dir.join(name), seg).unwrap();
        }
    }
}

/// What WAL of timeline 1 changed from the first segment `Wal` writes (segment 1) to `until`.
fn from_first_segment(
    dir: &Path,
    system: u64,
    until: u64,
    segment_size: usize,
) -> Result<(ChangedBlocks, Sources), String> {
    let size = segment_size as u64;
    changes_between(dir, system, 1, size, until, size)
}

/// The map of the `i`-th segment `Wal` wrote (segment `i + 1`).
fn map_of(segment: &[u8], i: usize, segment_size: usize) -> map::SegmentMap {
    map::map_segment(segment, (segment_size * (i + 1)) as u64).unwrap()
}

fn blocks(changed: &ChangedBlocks, r: RelFile) -> Vec<u32> {
    match changed.relation(r) {
        RelationChange::Blocks(Some(b)) => {
            let mut v: Vec<u32> = b.iter().copied().collect();
            v.sort_unstable();
            v
        }
        RelationChange::Blocks(None) => vec![],
        RelationChange::Whole => panic!("{r:?} read whole"),
    }
}

#[test]
fn crc32c_is_castagnoli() {
    assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
    assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
    let long = vec![0xA5u8; 1001];
    assert_eq!(crc32c(&[&long]), crc32c(&[&long[..3], &long[3..]]));
}

#[test]
fn block_references_of_every_header_shape_are_read() {
    let mut out = ChangedBlocks::default();
    let rec = heap(&[
        Ref(rel(100), 0, 7, false),
        Ref(rel(100), 0, 8, true), // same relation, compressed image with a hole
        Ref(rel(200), 2, 3, false), // visibility map: read whole anyway
        Ref(rel(300), 0, 1, true),
    ]);
    assert_eq!(record::decode(&rec, &mut out), Ok(record::Decoded::Record));
    assert_eq!(blocks(&out, rel(100)), vec![7, 8]);
    assert_eq!(blocks(&out, rel(200)), Vec::<u32>::new());
    assert_eq!(blocks(&out, rel(300)), vec![1]);
    let mut bad = rec.clone();
    bad[40] ^= 1;
    assert!(record::decode(&bad, &mut out).unwrap_err().contains("CRC"));
    assert!(
        record::decode(&rec[..30], &mut out).is_err(),
        "cut inside its headers"
    );
}

#[test]
fn relation_database_and_tablespace_events_make_files_whole() {
    let mut out = ChangedBlocks::default();
    let r = rel(100);
    let rel_bytes = |r: RelFile| -> Vec<u8> {
        [r.tablespace, r.database, r.relation]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    let mut truncate = 4u32.to_le_bytes().to_vec(); // new length in blocks
    truncate.extend(rel_bytes(r));
    truncate.extend(7u32.to_le_bytes()); // flags
    record::decode(&record(2, 0x20, &[], &truncate), &mut out).unwrap();
    assert_eq!(out.relation(r), RelationChange::Whole);
    let mut create = rel_bytes(rel(101));
    create.extend(0u32.to_le_bytes());
    record::decode(&record(2, 0x10, &[], &create), &mut out).unwrap();
    assert_eq!(out.relation(rel(101)), RelationChange::Whole);
    assert_eq!(blocks(&out, rel(102)), Vec::<u32>::new());
    let other_db = RelFile {
        database: 9,
        ..rel(1)
    };
    record::decode(
        &record(4, 0x10, &[], &[9, 0, 0, 0, 0x7F, 6, 0, 0]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.relation(other_db), RelationChange::Whole);
    let in_tablespace = RelFile {
        tablespace: 16400,
        ..rel(1)
    };
    record::decode(&record(5, 0x10, &[], &16400u32.to_le_bytes()), &mut out).unwrap();
    assert_eq!(out.relation(in_tablespace), RelationChange::Whole);
    assert_eq!(out.whole_count(), 4);
}

#[test]
fn records_across_pages_and_segments_are_all_found() {
    let segment_size = 4 * PAGE;
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::new(segment_size);
    let mut expected = Vec::new();
    let mut block = 0;
    // Records of varied sizes, so that some cross pages and segments, some headers too.
    while wal.bytes.len() < 3 * segment_size - 3000 {
        let refs: Vec<Ref> = (0..(block % 5 + 1))
            .map(|i| Ref(rel(100), 0, block * 10 + i, i % 2 == 1))
            .collect();
        expected.extend(refs.iter().map(|r| r.2));
        wal.write(&heap(&refs));
        block += 1;
    }
    let until = wal.lsn();
    wal.store(dir.path());
    let start = segment_size as u64;
    let (out, sources) =
        changes_between(dir.path(), SYSTEM, 1, start, until, segment_size as u64).unwrap();
    assert_eq!(
        sources,
        Sources {
            maps: 0,
            segments: 3
        }
    );
    expected.sort_unstable();
    assert_eq!(blocks(&out, rel(100)), expected);
    assert_eq!(out.records, u64::from(block));

    // The same, segment by segment with bounded edges, joined afterwards.
    let mut apart = ChangedBlocks::default();
    let mut tail: Vec<u8> = Vec::new();
    for (i, seg) in wal.segments().iter().enumerate() {
        let lsn = (segment_size * (i + 1)) as u64;
        let scan = scan_segment(seg, lsn, until, 4096, &mut apart).unwrap();
        if !tail.is_empty() {
            join_edge(&tail, &scan.head, &mut apart).unwrap();
        }
        tail = scan.tail;
    }
    assert_eq!(blocks(&apart, rel(100)), expected);
}

#[test]
fn a_scan_stops_at_its_bound_a_switch_and_the_end_of_written_wal() {
    let segment_size = 4 * PAGE;
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::new(segment_size);
    wal.write(&heap(&[Ref(rel(1), 0, 1, false)]));
    let until = wal.write(&heap(&[Ref(rel(1), 0, 2, false)]));
    wal.store(dir.path());
    let out = from_first_segment(dir.path(), SYSTEM, until, segment_size);
    assert_eq!(blocks(&out.unwrap().0, rel(1)), vec![1]);

    // Past a switch, nothing of the segment is read (here: a stale record).
    let mut wal = Wal::new(segment_size);
    wal.write(&heap(&[Ref(rel(1), 0, 1, false)]));
    wal.write(&record(0, 0x40, &[], &[]));
    wal.write(&heap(&[Ref(rel(1), 0, 3, false)]));
    let mut out = ChangedBlocks::default();
    let scan = scan_segment(
        &wal.segments()[0],
        segment_size as u64,
        u64::MAX,
        64,
        &mut out,
    );
    assert!(scan.unwrap().tail.is_empty());
    assert_eq!(blocks(&out, rel(1)), vec![1]);

    // A recycled page (another segment's address) inside a segment is an error, not an end.
    let mut wal = Wal::new(segment_size);
    while wal.bytes.len() < 2 * PAGE + 100 {
        wal.write(&heap(&[Ref(rel(1), 0, 1, false)]));
    }
    let mut seg = wal.segments()[0].clone();
    seg[3 * PAGE + 8] ^= 0x10; // page 3's address
    let scan = scan_segment(
        &seg,
        segment_size as u64,
        u64::MAX,
        64,
        &mut ChangedBlocks::default(),
    );
    assert!(scan.unwrap_err().contains("before the end of its segment"));

    // A segment that is gone is an error (the caller reads everything).
    let empty = tempfile::tempdir().unwrap();
    let gone = from_first_segment(empty.path(), SYSTEM, until, segment_size);
    assert!(gone.unwrap_err().contains("no longer in pg_wal"));
}

#[test]
fn main_fork_files_are_named_by_their_paths() {
    let r = |t, d, n| RelFile {
        tablespace: t,
        database: d,
        relation: n,
    };
    assert_eq!(main_fork_file("base/5/16384"), Some((r(1663, 5, 16384), 0)));
    assert_eq!(
        main_fork_file("base/5/16384.3"),
        Some((r(1663, 5, 16384), 3))
    );
    assert_eq!(main_fork_file("global/1262"), Some((r(1664, 0, 1262), 0)));
    assert_eq!(
        main_fork_file("pg_tblspc/16400/PG_15_202209061/5/16390"),
        Some((r(16400, 5, 16390), 0))
    );
    for other in [
        "base/5/16384_vm",
        "base/5/16384_fsm.1",
        "base/5/PG_VERSION",
        "pg_xact/0000",
    ] {
        assert_eq!(main_fork_file(other), None, "{other}");
    }
}

#[test]
fn maps_written_per_segment_join_into_what_the_segments_say() {
    let segment_size = 4 * PAGE;
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("admin_toolkit_blocks");
    std::fs::create_dir(&maps).unwrap();
    let mut wal = Wal::new(segment_size);
    let mut n = 0u32;
    while wal.bytes.len() < 3 * segment_size - 3000 {
        let refs: Vec<Ref> = (0..(n % 7 + 1))
            .map(|i| Ref(rel(n % 3), 0, n * 8 + i, true))
            .collect();
        wal.write(&heap(&refs));
        n += 1;
    }
    let mut truncate = 0u32.to_le_bytes().to_vec();
    for v in [DEFAULT_TABLESPACE, 5, 77] {
        truncate.extend(v.to_le_bytes());
    }
    truncate.extend(0u32.to_le_bytes());
    wal.write(&record(2, 0x20, &[], &truncate));
    let until = wal.lsn();
    wal.store(dir.path());
    let (from_segments, _) = from_first_segment(dir.path(), SYSTEM, until, segment_size).unwrap();

    // Maps of the two first segments (the third is "not archived yet": read itself).
    for (i, seg) in wal.segments().iter().enumerate().take(2) {
        let map = map_of(seg, i, segment_size);
        let bytes = map::encode(&map);
        let again = map::decode(&bytes).unwrap();
        assert_eq!(
            (&again.scan.head, &again.scan.tail),
            (&map.scan.head, &map.scan.tail)
        );
        let name = segment_file_name(1, i as u64 + 1, segment_size as u64);
        map::write_map(&maps, &name, &map).unwrap();
        std::fs::remove_file(dir.path().join(&name)).unwrap(); // recycled
    }
    let (from_maps, sources) = from_first_segment(dir.path(), SYSTEM, until, segment_size).unwrap();
    assert_eq!(
        sources,
        Sources {
            maps: 2,
            segments: 1
        }
    );
    for r in 0..3 {
        assert_eq!(blocks(&from_maps, rel(r)), blocks(&from_segments, rel(r)));
        assert!(!blocks(&from_maps, rel(r)).is_empty());
    }
    assert_eq!(from_maps.relation(rel(77)), RelationChange::Whole);
    assert_eq!(from_maps.records, from_segments.records);

    // A damaged map is refused, not believed.
    let name = segment_file_name(1, 2, segment_size as u64);
    let mut bytes = std::fs::read(maps.join(&name)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(maps.join(&name), &bytes).unwrap();
    let damaged = from_first_segment(dir.path(), SYSTEM, until, segment_size);
    assert!(damaged.unwrap_err().contains("CRC"));

    assert_eq!(map::prune_maps(&maps, 2, segment_size as u64).unwrap(), 1);
    assert!(maps.join(&name).exists());
}

#[test]
fn maps_of_another_history_or_cluster_are_refused() {
    let segment_size = 4 * PAGE;
    // Two WAL histories of two whole segments and a little more.
    let write = |blocks: u32| {
        let mut wal = Wal::new(segment_size);
        let mut starts = Vec::new();
        let mut n = 0;
        while wal.bytes.len() < 2 * segment_size + 500 {
            starts.push(wal.write(&heap(&[Ref(rel(1), 0, n * blocks, blocks == 3)])));
            n += 1;
        }
        (wal, starts)
    };
    let (ours, starts) = write(1);
    let (theirs, _) = write(3);
    // A record boundary in the second segment, well before its end.
    let until = *starts
        .iter()
        .rfind(|&&l| l < (3 * segment_size - 2000) as u64)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("admin_toolkit_blocks");
    std::fs::create_dir(&maps).unwrap();
    let store = |wal: &Wal, i: usize| {
        let seg = &wal.segments()[i];
        let map = map_of(seg, i, segment_size);
        let name = segment_file_name(1, i as u64 + 1, segment_size as u64);
        map::write_map(&maps, &name, &map).unwrap();
    };
    store(&ours, 0);
    store(&ours, 1);
    let range = |system| from_first_segment(dir.path(), system, until, segment_size);
    assert_eq!(
        range(SYSTEM).unwrap().1,
        Sources {
            maps: 2,
            segments: 0
        }
    );
    assert!(range(SYSTEM + 1).unwrap_err().contains("of cluster"));
    // The second segment's map from WAL that the first did not lead to.
    store(&theirs, 1);
    assert!(range(SYSTEM).unwrap_err().contains("does not continue"));
}

#[test]
fn a_record_longer_than_a_segment_and_a_switch_across_an_edge_are_read() {
    let segment_size = 4 * PAGE;
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::new(segment_size);
    wal.write(&heap(&[Ref(rel(1), 0, 1, false)]));
    // 40 kB of main data: begins in the first segment, covers the second, ends in the third.
    wal.write(&record(
        10,
        0x00,
        &[Ref(rel(1), 0, 2, false)],
        &vec![5u8; 40_000],
    ));
    wal.write(&heap(&[Ref(rel(1), 0, 3, false)]));
    // Up to 8 bytes before the third segment's end, then a switch across the edge.
    let edge = (4 * segment_size) as u64;
    while wal.lsn() < edge - 600 {
        wal.write(&heap(&[Ref(rel(1), 0, 4, false)]));
    }
    let filler = (edge - 8 - wal.lsn()) as usize; // one record exactly that long
    let main = if filler - 26 < 256 {
        filler - 26
    } else {
        filler - 29
    }; // short or long form
    wal.write(&record(10, 0x00, &[], &vec![6u8; main]));
    assert_eq!(wal.lsn(), edge - 8);
    wal.write(&record(0, 0x40, &[], &[]));
    let until = wal.lsn();
    wal.store(dir.path());
    // The fourth segment holds only the switch's last 16 bytes.
    let (out, sources) = from_first_segment(dir.path(), SYSTEM, until, segment_size).unwrap();
    assert_eq!(sources.segments, 4);
    assert_eq!(blocks(&out, rel(1)), vec![1, 2, 3, 4]);
    // The same through maps of the four segments.
    let maps = dir.path().join("admin_toolkit_blocks");
    std::fs::create_dir(&maps).unwrap();
    for (i, seg) in wal.segments().iter().enumerate() {
        let map = map_of(seg, i, segment_size);
        map::write_map(
            &maps,
            &segment_file_name(1, i as u64 + 1, segment_size as u64),
            &map,
        )
        .unwrap();
    }
    let (from_maps, sources) = from_first_segment(dir.path(), SYSTEM, until, segment_size).unwrap();
    assert_eq!(sources.maps, 4);
    assert_eq!(blocks(&from_maps, rel(1)), vec![1, 2, 3, 4]);
}
