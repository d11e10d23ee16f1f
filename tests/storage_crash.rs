//! Crash tests of the storage layer with real `kill -9`s.
//!
//! A parent test re-executes this test binary (`current_exe()`) with
//! `FLOTILLA_CRASH_CHILD_DIR` set and an `--exact` filter naming a
//! child-mode test, which does nothing in a normal run. The child writes
//! through `Engine` and `GroupStorage` as the runtime would and prints a line
//! only once `Engine::commit` has returned; the parent SIGKILLs it at a random
//! moment, reopens the directory itself and checks that everything
//! acknowledged is there, exactly.
//!
//! A kill keeps the kernel's page cache, so these tests cover process
//! crashes (atomicity, recovery, acknowledged-means-written), not power loss:
//! they would still pass with `sync_writes` off.
//!
//! FLOTILLA_CRASH_SEED picks the random choices (printed on failure; the kill
//! timing is real time, so a seed narrows a failure down rather than replaying
//! it); FLOTILLA_CRASH_KILLS=N runs more kills.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use flotilla::kv::{apply_entries, encode_command, get, scan, Applied, Command, CommandResult};
use flotilla::raft::{ConfState, Entry, EntryPayload, GroupId, HardState, LogIndex, LogStore, NodeId, Term};
use flotilla::sim::Rng;
use flotilla::storage::{ApplyState, Engine, GroupStorage, StorageBatch, StorageConfig};

#[path = "support/crash_harness.rs"]
mod crash_harness;

use crash_harness::*;

// ---------------------------------------------------------------------------
// Durability of acknowledged log writes across kill -9.

/// One group's durable state as the parent expects it.
#[derive(Clone, Debug)]
struct GroupModel {
    /// As a restart finds it: the commit index is the stored one lifted to
    /// the applied index (commit-only changes are not written).
    hard_state: HardState,
    /// The commit index on disk, written only with a term or vote change.
    /// Not observable on its own, so not compared.
    stored_commit: u64,
    applied: u64,
    truncated: u64,
    /// Live entries: index -> (term, id of the batch that wrote it).
    entries: BTreeMap<u64, (u64, u64)>,
}

impl PartialEq for GroupModel {
    fn eq(&self, other: &GroupModel) -> bool {
        (self.hard_state, self.applied, self.truncated, &self.entries)
            == (other.hard_state, other.applied, other.truncated, &other.entries)
    }
}

impl GroupModel {
    fn bootstrapped() -> GroupModel {
        let hard_state = HardState { term: Term(1), vote: None, commit: LogIndex(1) };
        GroupModel { hard_state, stored_commit: 1, applied: 1, truncated: 1, entries: BTreeMap::new() }
    }
}

/// The node's groups; `None` until the bootstrap batch is on disk.
type NodeModel = Option<Vec<GroupModel>>;

#[derive(Debug, Default)]
struct Stats {
    acks: u64,
    overwrites: u64,
    purges: u64,
    in_flight_durable: u64,
    in_flight_lost: u64,
}

/// The entry at (group, index, term) written by batch `batch`: the fields in
/// a readable head, then filler whose length and bytes depend on all of
/// them, so a stale, misplaced or torn entry cannot pass for the right one.
fn payload(group: u64, index: u64, term: u64, batch: u64) -> Vec<u8> {
    let mut out = format!("g{group} i{index} t{term} b{batch};").into_bytes();
    let mut filler = Rng::new(group ^ (index << 16) ^ (term << 32) ^ (batch << 40));
    let len = filler.range(0, 300);
    out.extend((0..len).map(|_| filler.next_u64() as u8));
    out
}

/// The [group, index, term, batch] a payload names, if it is exactly the
/// payload `payload` makes of them.
fn parse_payload(data: &[u8]) -> Option<[u64; 4]> {
    let head = std::str::from_utf8(&data[..data.iter().position(|&b| b == b';')?]).ok()?;
    let fields: Vec<u64> = head
        .split(' ')
        .zip(['g', 'i', 't', 'b'])
        .map(|(f, p)| f.strip_prefix(p)?.parse().ok())
        .collect::<Option<_>>()?;
    let [group, index, term, batch] = fields[..] else { return None };
    (payload(group, index, term, batch) == data).then_some([group, index, term, batch])
}

#[test]
fn crash_child_writer() {
    child_mode(run_writer);
}

/// Writes batches forever, announcing each (INTENT) before committing it so
/// the parent can recognise it on disk, and acknowledging it (ACK) after.
fn run_writer(dir: &Path) -> ChildResult<()> {
    let mut rng = Rng::new(env_u64(CHILD_SEED, 0));
    let mut id = env_u64(CHILD_FIRST_BATCH, 0);
    let engine = Arc::new(Engine::open(dir, 1, &StorageConfig::default())?);
    let mut groups = open_or_bootstrap(&engine)?;
    emit("READY")?;
    let mut order: Vec<usize> = (0..GROUPS).collect();
    let started = Instant::now();
    while started.elapsed() < CHILD_LIFETIME {
        rng.shuffle(&mut order);
        let mut batch = StorageBatch::new();
        let mut summary = format!("INTENT {id}");
        for &k in &order[..rng.range(1, 6) as usize] {
            summary += &stage_group_write(&mut groups[k], &mut batch, &mut rng, id)?;
        }
        emit(&summary)?;
        engine.commit(batch)?;
        emit(&format!("ACK {id}"))?;
        id += 1;
    }
    Ok(())
}

/// Resumes from whatever is on disk: restart recovery is part of the test.
fn open_or_bootstrap(engine: &Arc<Engine>) -> ChildResult<Vec<GroupStorage>> {
    let mut batch = StorageBatch::new();
    let mut groups = Vec::new();
    for g in 1..=GROUPS as u64 {
        groups.push(match GroupStorage::open(engine.clone(), GroupId(g))? {
            Some(storage) => storage,
            None => GroupStorage::bootstrap(engine.clone(), GroupId(g), ConfState::with_voters([1, 2, 3]), &mut batch)?,
        });
    }
    engine.commit(batch)?;
    Ok(groups)
}

/// Stages one group's part of a batch as a follower's Ready would: append,
/// or (a new leader) replace the uncommitted tail with a higher term, never a
/// committed entry; move commit; sometimes apply and purge. Returns the
/// group's part of the INTENT line.
fn stage_group_write(
    storage: &mut GroupStorage,
    batch: &mut StorageBatch,
    rng: &mut Rng,
    id: u64,
) -> ChildResult<String> {
    let group = storage.group().0;
    let hard = *storage.hard_state();
    let last = storage.last_index().0;
    let (first, term, vote) = if last > hard.commit.0 && rng.chance(200_000) {
        let term = hard.term.0 + 1;
        (rng.range(hard.commit.0 + 1, last + 1), term, Some(NodeId(1 + term % 3)))
    } else {
        (last + 1, hard.term.0, hard.vote)
    };
    let count = rng.range(1, 5);
    let entries: Vec<Entry> = (first..first + count)
        .map(|i| Entry::new_normal(Term(term), LogIndex(i), payload(group, i, term, id)))
        .collect();
    storage.stage_entries(batch, &entries)?;
    // Commit often lags the tail, so there is an uncommitted tail to replace.
    let commit = rng.range(hard.commit.0, first + count);
    storage.stage_hard_state(batch, HardState { term: Term(term), vote, commit: LogIndex(commit) });
    if rng.chance(250_000) && commit > storage.applied().index.0 {
        let applied = LogIndex(commit);
        let applied_term = storage.term(applied)?;
        storage.stage_apply_state(batch, ApplyState { index: applied, term: applied_term }, None);
        // Purging needs the entries applied; this batch records both.
        if rng.chance(600_000) {
            storage.stage_purge(batch, LogIndex(rng.range(storage.truncated().index.0 + 1, commit + 1)))?;
        }
    }
    let (applied, truncated) = (storage.applied().index.0, storage.truncated().index.0);
    Ok(format!(" {group},{first},{count},{term},{},{commit},{applied},{truncated}", vote.map_or(0, |v| v.0)))
}

/// Applies an INTENT summary ("<batch> <group part>...") to the model.
fn apply_summary(model: &mut [GroupModel], summary: &str, stats: &mut Stats) {
    let mut words = summary.split(' ');
    let batch: u64 = words.next().and_then(|w| w.parse().ok()).expect("batch id");
    for part in words {
        let fields: Vec<u64> = part.split(',').map(|f| f.parse().expect("child summary field")).collect();
        let [group, first, count, term, vote, commit, applied, truncated] = fields[..] else {
            panic!("bad part {part}")
        };
        let m = &mut model[group as usize - 1];
        stats.overwrites += (term > m.hard_state.term.0) as u64;
        stats.purges += (truncated > m.truncated) as u64;
        m.entries.retain(|&index, _| index < first);
        m.entries.extend((first..first + count).map(|i| (i, (term, batch))));
        let vote = (vote != 0).then_some(NodeId(vote));
        if (Term(term), vote) != (m.hard_state.term, m.hard_state.vote) {
            m.stored_commit = commit;
        }
        m.hard_state = HardState { term: Term(term), vote, commit: LogIndex(m.stored_commit.max(applied)) };
        (m.applied, m.truncated) = (applied, truncated);
        m.entries.retain(|&index, _| index > truncated);
    }
}

/// Folds one child run's acknowledged batches into `model`; returns the
/// batch it announced but did not acknowledge before the kill, if any.
fn fold_lines(model: &mut NodeModel, lines: &[String], stats: &mut Stats, context: &str) -> Option<String> {
    let mut pending: Option<String> = None;
    for line in lines {
        if line == "READY" && model.is_none() {
            *model = Some(vec![GroupModel::bootstrapped(); GROUPS]);
        } else if let Some(summary) = line.strip_prefix("INTENT ") {
            pending = Some(summary.to_string());
        } else if let Some(id) = line.strip_prefix("ACK ") {
            let summary = pending.take().filter(|s| s.split(' ').next() == Some(id));
            let summary = summary.unwrap_or_else(|| panic!("{context}: ACK {id} without its INTENT"));
            apply_summary(model.as_mut().expect("READY comes first"), &summary, stats);
            stats.acks += 1;
        }
    }
    pending
}

/// Reads every group back through `GroupStorage::open` and `LogStore`.
/// `open` refuses a hole between the truncated index and the first entry.
fn read_node(dir: &Path, context: &str) -> NodeModel {
    let engine = Arc::new(Engine::open(dir, 1, &StorageConfig::default()).unwrap_or_else(|e| panic!("{context}: {e}")));
    let groups: Vec<Option<GroupStorage>> = (1..=GROUPS as u64)
        .map(|g| GroupStorage::open(engine.clone(), GroupId(g)).unwrap_or_else(|e| panic!("{context}: group {g}: {e}")))
        .collect();
    if groups.iter().all(Option::is_none) {
        return None;
    }
    // All groups were bootstrapped in one batch: all of them or none.
    let read = |(k, group): (usize, Option<GroupStorage>)| {
        read_group(&group.unwrap_or_else(|| panic!("{context}: group {} is missing, others exist", k + 1)), context)
    };
    Some(groups.into_iter().enumerate().map(read).collect())
}

/// Checks what holds whatever was acknowledged: a log without holes whose
/// entries carry exactly the payload written for their place, terms that
/// never decrease and agree with `term()`.
fn read_group(storage: &GroupStorage, context: &str) -> GroupModel {
    let (g, truncated, hard_state) = (storage.group().0, storage.truncated(), *storage.hard_state());
    let (first, last) = (storage.first_index(), storage.last_index());
    assert_eq!(first, truncated.index.next(), "{context}: group {g}: first index");
    let log = storage.entries(first, last.next(), u64::MAX).unwrap_or_else(|e| panic!("{context}: group {g}: {e}"));
    assert_eq!(log.len() as u64, last - truncated.index, "{context}: group {g}: entries [{first}, {last}] have holes");
    assert_eq!(storage.term(truncated.index), Ok(truncated.term), "{context}: group {g}: term at the truncated index");
    let mut entries = BTreeMap::new();
    let mut previous_term = truncated.term;
    for (entry, index) in log.iter().zip(first.0..) {
        let EntryPayload::Normal(data) = &entry.payload else { panic!("{context}: group {g}: entry {index} kind") };
        let parsed = parse_payload(data).unwrap_or_else(|| panic!("{context}: group {g}: entry {index} is damaged"));
        assert_eq!(parsed[..3], [g, index, entry.term.0], "{context}: group {g}: entry {index} is misplaced");
        assert_eq!(entry.index.0, index, "{context}: group {g}: entry {index} has the wrong index");
        let terms = (previous_term, entry.term, hard_state.term);
        assert!(
            terms.0 <= terms.1 && terms.1 <= terms.2,
            "{context}: group {g}: (previous, entry, hard state) terms at {index}: {terms:?}"
        );
        assert_eq!(storage.term(entry.index), Ok(entry.term), "{context}: group {g}: term() at {index}");
        previous_term = entry.term;
        entries.insert(index, (entry.term.0, parsed[3]));
    }
    // The stored commit cannot be read back; equality ignores it.
    let (applied, truncated) = (storage.applied().index.0, truncated.index.0);
    GroupModel { hard_state, stored_commit: 0, applied, truncated, entries }
}

/// The disk must hold exactly the acknowledged state, or that plus the whole
/// batch in flight at the kill (group commit is atomic across groups);
/// returns the one it holds, the model for the next run.
fn match_recovered(
    acked: NodeModel,
    in_flight: Option<String>,
    on_disk: NodeModel,
    context: &str,
    stats: &mut Stats,
) -> NodeModel {
    if on_disk == acked {
        stats.in_flight_lost += in_flight.is_some() as u64;
        return acked;
    }
    let with_in_flight = match (&acked, &in_flight) {
        (None, _) => Some(vec![GroupModel::bootstrapped(); GROUPS]),
        (Some(groups), Some(summary)) => {
            let mut groups = groups.clone();
            apply_summary(&mut groups, summary, &mut Stats::default());
            Some(groups)
        }
        (Some(_), None) => None,
    };
    if with_in_flight.is_some() && on_disk == with_in_flight {
        stats.in_flight_durable += 1;
        // The model, not what was read: it also knows the stored commit.
        return with_in_flight;
    }
    let (Some(acked), Some(disk)) = (&acked, &on_disk) else {
        panic!("{context}: the groups on disk are neither the acknowledged ones nor freshly bootstrapped")
    };
    let k = (0..GROUPS).find(|&k| acked[k] != disk[k]).expect("some group differs");
    panic!("{context}: group {} differs from what was acknowledged (in flight: {in_flight:?})\nacknowledged: {:?}\non disk: {:?}", k + 1, acked[k], disk[k]);
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let (seed, kills) = (env_u64("FLOTILLA_CRASH_SEED", DEFAULT_SEED), env_u64("FLOTILLA_CRASH_KILLS", 20));
    let _report = SeedReport("acknowledged_writes_survive_kill_9", seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rng = Rng::new(seed);
    let (mut model, mut stats, started) = (None, Stats::default(), Instant::now());
    for run in 1..=kills {
        let context = format!("seed {seed}, run {run}");
        let env = [(CHILD_SEED, rng.next_u64()), (CHILD_FIRST_BATCH, run * 1_000_000)];
        let mut child = ChildProcess::spawn("crash_child_writer", dir.path(), &env);
        // Now and then the kill lands during start-up or recovery, but not
        // while the directory is first created: Engine::open refuses the
        // half-created directory such a crash leaves (a known gap).
        if model.is_some() && rng.chance(125_000) {
            sleep(Duration::from_millis(rng.range(0, 300)));
        } else {
            assert!(child.wait_for("READY", READY_TIMEOUT), "{context}: the child never became ready");
            sleep(Duration::from_millis(rng.range(50, 401)));
        }
        let (status, lines) = child.kill();
        assert_killed(status, &lines, &context);
        let in_flight = fold_lines(&mut model, &lines, &mut stats, &context);
        let on_disk = read_node(dir.path(), &context);
        model = match_recovered(model, in_flight, on_disk, &context, &mut stats);
    }
    eprintln!("{kills} kills in {:.1?}: {stats:?}", started.elapsed());
    assert!(stats.acks >= kills, "too few batches acknowledged to mean anything: {stats:?}");
    assert!(stats.overwrites > 0 && stats.purges > 0, "tail overwrites and purges were not exercised: {stats:?}");
}

// ---------------------------------------------------------------------------
// Exactly-once apply across crashes.

const APPLY_GROUP: GroupId = GroupId(9);
const CAS_STEPS: u64 = 300;
/// Index 1 is the bootstrap snapshot; the first entry follows it.
const FIRST_ENTRY: u64 = 2;
/// Most entries one turn of the kill -9 child applies.
const CHILD_TURN: u64 = 4;

fn cas(key: &[u8], expected: Option<u64>, new: Option<u64>) -> Command {
    let value = |n: Option<u64>| n.map(|n| n.to_string().into_bytes());
    Command::CompareAndSwap { key: key.to_vec(), expected: value(expected), new: value(new) }
}

/// The committed commands in log order (`None`: a leader's empty entry):
/// a chain of compare-and-swaps of "counter" from n to n + 1, each of which
/// succeeds only if the one before it applied exactly once, with puts and
/// deletes of other keys and swaps that must fail in between.
fn apply_plan() -> Vec<Option<Command>> {
    let mut plan = vec![Some(Command::Put { key: b"counter".to_vec(), value: b"0".to_vec() })];
    for n in 0..CAS_STEPS {
        plan.push(Some(cas(b"counter", Some(n), Some(n + 1))));
        if n % 3 == 0 {
            plan.push(Some(Command::Put {
                key: format!("key-{n}").into_bytes(),
                value: format!("value-{n}").into_bytes(),
            }));
        }
        if n % 7 == 6 {
            plan.push(Some(Command::Delete { key: format!("key-{}", n - 6).into_bytes() }));
        }
        if n % 11 == 0 {
            plan.push(Some(cas(b"counter", Some(n + 5), None)));
        }
        if n % 50 == 25 {
            plan.push(None);
        }
    }
    plan
}

/// What applying the first `count` commands must give: each one's result
/// and the data afterwards (the KV semantics, written independently).
fn reference(plan: &[Option<Command>], count: usize) -> (Vec<CommandResult>, BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut data = BTreeMap::new();
    let results = (plan[..count].iter().cloned())
        .map(|command| match command {
            None => CommandResult::NoOp,
            Some(Command::Put { key, value }) => {
                data.insert(key, value);
                CommandResult::Put
            }
            Some(Command::Delete { key }) => CommandResult::Delete { existed: data.remove(&key).is_some() },
            Some(Command::CompareAndSwap { key, expected, new }) => {
                let previous = data.get(&key).cloned();
                let succeeded = previous == expected;
                match new {
                    Some(value) if succeeded => data.insert(key, value),
                    None if succeeded => data.remove(&key),
                    _ => None,
                };
                CommandResult::CompareAndSwap { succeeded, previous }
            }
        })
        .collect();
    (results, data)
}

/// Creates the group and persists its whole log as committed: the log is
/// not under test here, apply is. Returns the last index.
fn write_committed_log(dir: &Path, plan: &[Option<Command>]) -> u64 {
    let engine = Arc::new(Engine::open(dir, 1, &StorageConfig::default()).expect("open the engine"));
    let mut batch = StorageBatch::new();
    let mut storage =
        GroupStorage::bootstrap(engine.clone(), APPLY_GROUP, ConfState::with_voters([1]), &mut batch).unwrap();
    let data = |command: &Option<Command>| command.as_ref().map(encode_command).unwrap_or_default();
    let entries: Vec<Entry> =
        (plan.iter().zip(FIRST_ENTRY..)).map(|(c, i)| Entry::new_normal(Term(1), LogIndex(i), data(c))).collect();
    storage.stage_entries(&mut batch, &entries).unwrap();
    let last = entries.last().expect("a non-empty plan").index;
    storage.stage_hard_state(&mut batch, HardState { term: Term(1), vote: Some(NodeId(1)), commit: last });
    engine.commit(batch).unwrap();
    last.0
}

fn open_group(dir: &Path) -> GroupStorage {
    let engine = Arc::new(Engine::open(dir, 1, &StorageConfig::default()).expect("reopen the engine"));
    GroupStorage::open(engine, APPLY_GROUP).expect("open the group").expect("the group exists")
}

/// One `apply_entries` call must report exactly the entries after the
/// applied index, each with the reference result.
fn check_results(results: &[Applied], applied: u64, to: u64, expected: &[CommandResult]) -> Result<(), String> {
    let indexes: Vec<u64> = results.iter().map(|a| a.index.0).collect();
    if indexes != (applied + 1..=to).collect::<Vec<_>>() {
        return Err(format!("with {applied} applied, delivering up to {to} applied {indexes:?}"));
    }
    let want = |a: &Applied| &expected[(a.index.0 - FIRST_ENTRY) as usize];
    match results.iter().find(|a| a.result != *want(a)) {
        Some(a) => Err(format!("entry {}: {:?}, expected {:?}", a.index, a.result, want(a))),
        None => Ok(()),
    }
}

/// The data must be exactly the reference state at the applied index:
/// data and applied index are written together or not at all.
fn check_data(storage: &GroupStorage, plan: &[Option<Command>]) -> Result<(), String> {
    let applied = storage.applied().index.0;
    let (_, want) = reference(plan, (applied + 1 - FIRST_ENTRY) as usize);
    let got = scan(storage.engine(), APPLY_GROUP, b"", b"", usize::MAX).map_err(|e| e.to_string())?;
    let got: BTreeMap<Vec<u8>, Vec<u8>> = got.into_iter().collect();
    let summary = |data: &BTreeMap<Vec<u8>, Vec<u8>>| {
        (data.len(), data.get(&b"counter"[..]).map(|v| String::from_utf8_lossy(v).into_owned()))
    };
    match got == want {
        true => Ok(()),
        false => Err(format!("applied {applied}: (keys, counter) {:?}, expected {:?}", summary(&got), summary(&want))),
    }
}

/// One apply turn: Raft may re-deliver committed entries from anywhere at
/// or before applied + 1 (after a restart, from the first entry); stage
/// their effects and check the results. Returns the uncommitted batch.
fn apply_turn(
    storage: &mut GroupStorage,
    rng: &mut Rng,
    chunk: u64,
    expected: &[CommandResult],
) -> Result<(StorageBatch, u64), String> {
    let applied = storage.applied().index.0;
    let from = rng.range(FIRST_ENTRY, applied + 2);
    let to = storage.last_index().0.min(applied + rng.range(1, chunk + 1));
    let entries = storage.entries(LogIndex(from), LogIndex(to + 1), u64::MAX).map_err(|e| e.to_string())?;
    let mut batch = StorageBatch::new();
    let results = apply_entries(storage, &mut batch, &entries, None).map_err(|e| e.to_string())?;
    check_results(&results, applied, to, expected)?;
    Ok((batch, to))
}

/// Re-delivers the whole log twice, as a restarted Raft may: only what is
/// not yet applied applies, once; then the counter must be exactly N.
fn finish_and_check(mut storage: GroupStorage, plan: &[Option<Command>], context: &str) {
    let (expected, final_data) = reference(plan, plan.len());
    let last = storage.last_index();
    for _ in 0..2 {
        let applied = storage.applied().index.0;
        let entries = storage.entries(LogIndex(FIRST_ENTRY), last.next(), u64::MAX).expect("read the log");
        let mut batch = StorageBatch::new();
        let results = apply_entries(&mut storage, &mut batch, &entries, None).expect("apply");
        check_results(&results, applied, last.0, &expected).unwrap_or_else(|e| panic!("{context}: {e}"));
        storage.engine().commit(batch).expect("commit");
    }
    assert_eq!(storage.applied().index, last, "{context}");
    let counter = get(storage.engine(), APPLY_GROUP, b"counter").expect("read counter");
    assert_eq!(counter, Some(CAS_STEPS.to_string().into_bytes()), "{context}: counter");
    check_data(&storage, plan).unwrap_or_else(|e| panic!("{context}: {e}"));
    // The plan itself: every chained swap succeeds and the 28 decoys fail;
    // 100 puts, 14 of whose keys are deleted later, plus the counter.
    let swaps = |want: bool| {
        expected
            .iter()
            .filter(|r| matches!(r, CommandResult::CompareAndSwap { succeeded, .. } if *succeeded == want))
            .count()
    };
    assert_eq!((swaps(true), swaps(false)), (CAS_STEPS as usize, 28), "{context}: the plan's swaps");
    assert_eq!(final_data.len(), 87, "{context}: the plan's live keys");
}

#[test]
fn apply_is_exactly_once_across_a_crash() {
    let seed = env_u64("FLOTILLA_CRASH_SEED", DEFAULT_SEED);
    let _report = SeedReport("apply_is_exactly_once_across_a_crash", seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let plan = apply_plan();
    let (expected, _) = reference(&plan, plan.len());
    let last = write_committed_log(dir.path(), &plan);
    let mut rng = Rng::new(seed);
    let mut storage = open_group(dir.path());
    let (mut lost, mut reopened) = (0, 0);
    while storage.applied().index.0 < last {
        let before = storage.applied();
        let (batch, to) =
            apply_turn(&mut storage, &mut rng, 40, &expected).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        match rng.range(0, 4) {
            0 => {
                // A crash before the commit: the staged batch never reaches disk.
                drop((batch, storage));
                storage = open_group(dir.path());
                assert_eq!(storage.applied(), before, "seed {seed}: an uncommitted apply survived");
                lost += 1;
            }
            choice => {
                storage.engine().commit(batch).expect("commit");
                if choice == 1 {
                    drop(storage);
                    storage = open_group(dir.path());
                    assert_eq!(storage.applied().index.0, to, "seed {seed}: a committed apply was lost");
                    reopened += 1;
                }
            }
        }
        check_data(&storage, &plan).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    assert!(lost >= 3 && reopened >= 3, "seed {seed}: too few crashes ({lost} lost, {reopened} reopened)");
    finish_and_check(storage, &plan, &format!("seed {seed}"));
}

#[test]
fn crash_child_applier() {
    child_mode(run_applier);
}

/// Applies the committed log in small committed turns (APPLIED <index>
/// after each commit), checking on start-up that recovery left data and
/// applied index in agreement.
fn run_applier(dir: &Path) -> ChildResult<()> {
    let mut rng = Rng::new(env_u64(CHILD_SEED, 0));
    let plan = apply_plan();
    let (expected, _) = reference(&plan, plan.len());
    let mut storage = open_group(dir);
    check_data(&storage, &plan)?;
    emit("READY")?;
    let started = Instant::now();
    while storage.applied().index < storage.last_index() && started.elapsed() < CHILD_LIFETIME {
        let (batch, to) = apply_turn(&mut storage, &mut rng, CHILD_TURN, &expected)?;
        storage.engine().commit(batch)?;
        emit(&format!("APPLIED {to}"))?;
        // Spreads the apply over several kill windows.
        sleep(Duration::from_millis(4));
    }
    emit("DONE")?;
    Ok(())
}

#[test]
fn apply_is_exactly_once_across_kill_9() {
    let seed = env_u64("FLOTILLA_CRASH_SEED", DEFAULT_SEED);
    let _report = SeedReport("apply_is_exactly_once_across_kill_9", seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let plan = apply_plan();
    let last = write_committed_log(dir.path(), &plan);
    let mut rng = Rng::new(seed ^ 0xA991);
    let (mut acknowledged, mut applied, mut mid_apply_kills, mut runs) = (1, 1, 0, 0);
    while runs < 60 {
        runs += 1;
        let context = format!("seed {seed}, run {runs}");
        let mut child = ChildProcess::spawn("crash_child_applier", dir.path(), &[(CHILD_SEED, rng.next_u64())]);
        assert!(child.wait_for("READY", READY_TIMEOUT), "{context}: the child never became ready");
        sleep(Duration::from_millis(rng.range(20, 120)));
        let (status, lines) = child.kill();
        let done = lines.iter().any(|line| line == "DONE");
        if !(done && status.success()) {
            assert_killed(status, &lines, &context);
        }
        let applied_lines = lines.iter().filter_map(|line| line.strip_prefix("APPLIED ")?.parse::<u64>().ok());
        acknowledged = applied_lines.max().unwrap_or(acknowledged).max(acknowledged);
        // At least what was acknowledged; at most one unacknowledged turn more.
        let floor = acknowledged.max(applied);
        let storage = open_group(dir.path());
        applied = storage.applied().index.0;
        assert!(
            (floor..=floor + CHILD_TURN).contains(&applied),
            "{context}: applied {applied}, acknowledged {acknowledged}"
        );
        check_data(&storage, &plan).unwrap_or_else(|e| panic!("{context}: {e}"));
        if done {
            break;
        }
        mid_apply_kills += (FIRST_ENTRY <= applied && applied < last) as u64;
    }
    eprintln!("apply: {runs} runs, {mid_apply_kills} kills mid-apply, acknowledged through {acknowledged} of {last}");
    assert!(mid_apply_kills >= 3, "seed {seed}: only {mid_apply_kills} kills landed mid-apply");
    finish_and_check(open_group(dir.path()), &plan, &format!("seed {seed}"));
}

// ---------------------------------------------------------------------------
// An empty group's vote across kill -9.

/// A group created empty to receive a snapshot: no log, no truncated state,
/// only the hard state it writes when it votes.
const VOTER_GROUP: GroupId = GroupId(12);

/// The vote the child casts in `term` (a different candidate each term, so a
/// vote from the wrong term cannot pass for the right one).
fn vote_in(term: u64) -> HardState {
    HardState { term: Term(term), vote: Some(NodeId(1 + term % 3)), commit: LogIndex::ZERO }
}

#[test]
fn crash_child_voter() {
    child_mode(run_voter);
}

/// Votes in one term after another as an empty group would, printing
/// VOTED <term> once each vote is committed. It starts from whatever
/// `GroupStorage::open` finds, as the runtime would: a group it does not
/// find is recreated empty, and would vote again in terms it voted in.
fn run_voter(dir: &Path) -> ChildResult<()> {
    let engine = Arc::new(Engine::open(dir, 1, &StorageConfig::default())?);
    let mut storage = match GroupStorage::open(engine.clone(), VOTER_GROUP)? {
        Some(storage) => storage,
        None => GroupStorage::empty(engine.clone(), VOTER_GROUP),
    };
    let started = Instant::now();
    while started.elapsed() < CHILD_LIFETIME {
        let term = storage.hard_state().term.0 + 1;
        let mut batch = StorageBatch::new();
        storage.stage_hard_state(&mut batch, vote_in(term));
        engine.commit(batch)?;
        emit(&format!("VOTED {term}"))?;
        // Spreads the votes over the kill window.
        sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// The term of the child's first vote, once it is acknowledged.
fn first_vote(child: &mut ChildProcess, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(term) = child.seen.iter().find_map(|line| line.strip_prefix("VOTED ")?.parse().ok()) {
            return Some(term);
        }
        let line = child.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?;
        child.seen.push(line);
    }
}

#[test]
fn an_empty_groups_vote_survives_kill_9() {
    let seed = env_u64("FLOTILLA_CRASH_SEED", DEFAULT_SEED);
    let _report = SeedReport("an_empty_groups_vote_survives_kill_9", seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rng = Rng::new(seed ^ 0x707E);
    // The last term voted in, as found on disk after the previous kill.
    let mut durable = 0;
    for run in 1..=6 {
        let context = format!("seed {seed}, run {run}");
        let mut child = ChildProcess::spawn("crash_child_voter", dir.path(), &[]);
        // Each run votes at least once before the kill, and first in the
        // term after the last durable vote: a child that forgot it votes
        // again in a term it already voted in.
        let first = first_vote(&mut child, READY_TIMEOUT);
        assert_eq!(first, Some(durable + 1), "{context}: first vote after the last durable one, in term {durable}");
        sleep(Duration::from_millis(rng.range(0, 100)));
        let (status, lines) = child.kill();
        assert_killed(status, &lines, &context);
        let acknowledged = lines.iter().filter_map(|line| line.strip_prefix("VOTED ")?.parse().ok()).max();
        let acknowledged: u64 = acknowledged.expect("the first vote was seen");
        let engine = Arc::new(Engine::open(dir.path(), 1, &StorageConfig::default()).expect("reopen the engine"));
        let storage = GroupStorage::open(engine, VOTER_GROUP)
            .unwrap_or_else(|e| panic!("{context}: {e}"))
            .unwrap_or_else(|| panic!("{context}: the group's votes through term {acknowledged} were forgotten"));
        // What was acknowledged, or that plus the vote in flight at the kill.
        let term = storage.hard_state().term.0;
        assert!(term == acknowledged || term == acknowledged + 1, "{context}: term {term}, acked {acknowledged}");
        assert_eq!(*storage.hard_state(), vote_in(term), "{context}: the vote of term {term}");
        assert_eq!((storage.first_index(), storage.last_index()), (LogIndex(1), LogIndex::ZERO), "{context}: empty");
        durable = term;
    }
}
