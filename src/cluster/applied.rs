//! The applied state in the database: one record per row (tables `sm_nodes`,
//! `sm_definitions`, `sm_containers`, `sm_rules`, `sm_history`, `sm_network`,
//! `sm_policies`, `sm_volumes`, `sm_secrets` (sealed), plus a
//! small meta row in `state_machine`). Applying entries writes the rows they touched: the
//! cost of a commit follows the change, not the state's size (`store.rs` decides when).

use super::state::{
    ClusterState, ContainerRecord, Definition, NodeRecord, RuleHistory, RuleRecord, Table, Touched,
};
use crate::spec::NodePolicy;
use openraft::{AnyError, BasicNode, LogId, StoredMembership};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

type NodeId = u64;

pub(super) const SM: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");
pub(super) const SM_NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_nodes");
pub(super) const SM_DEFINITIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("sm_definitions");
pub(super) const SM_CONTAINERS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("sm_containers");
pub(super) const SM_RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_rules");
pub(super) const SM_HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_history");
pub(super) const SM_NETWORK: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_network");
pub(super) const SM_POLICIES: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_policies");
pub(super) const SM_VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_volumes");
pub(super) const SM_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_secrets");

pub(super) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(|e| AnyError::new(&e))
}

pub(super) fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, AnyError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| AnyError::new(&e))
}

pub(super) fn any<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

/// The applied state (and a snapshot's data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Applied {
    pub(super) last_applied: Option<LogId<NodeId>>,
    pub(super) last_membership: StoredMembership<NodeId, BasicNode>,
    pub(super) state: ClusterState,
}

/// The `sm_meta` row: everything of the applied state that is not a record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    max_node_id: u64,
    next_seq: u64,
}

impl AppliedMeta {
    fn of(a: &Applied) -> AppliedMeta {
        AppliedMeta {
            last_applied: a.last_applied,
            last_membership: a.last_membership.clone(),
            max_node_id: a.state.max_node_id(),
            next_seq: a.state.next_seq(),
        }
    }
}

/// Which records to write: the touched ones, or all (a snapshot replaced the state).
pub(super) enum Rows<'a> {
    Touched(&'a Touched),
    All,
}

/// Writes the applied state's meta row and the record rows `rows` names (a record no
/// longer in the state is deleted) in the open transaction.
pub(super) fn write_applied(
    tx: &redb::WriteTransaction,
    a: &Applied,
    rows: Rows,
) -> Result<(), AnyError> {
    let st = &a.state;
    let mut sm = tx.open_table(SM).map_err(any)?;
    sm.insert("meta", enc(&AppliedMeta::of(a))?.as_slice())
        .map_err(any)?;
    let mut nodes = tx.open_table(SM_NODES).map_err(any)?;
    let mut defs = tx.open_table(SM_DEFINITIONS).map_err(any)?;
    let mut containers = tx.open_table(SM_CONTAINERS).map_err(any)?;
    let mut rules = tx.open_table(SM_RULES).map_err(any)?;
    let mut history = tx.open_table(SM_HISTORY).map_err(any)?;
    let mut network = tx.open_table(SM_NETWORK).map_err(any)?;
    let mut policies = tx.open_table(SM_POLICIES).map_err(any)?;
    let mut volumes = tx.open_table(SM_VOLUMES).map_err(any)?;
    let mut secrets = tx.open_table(SM_SECRETS).map_err(any)?;
    let all;
    let t = match rows {
        Rows::All => {
            nodes.retain(|_, _| false).map_err(any)?;
            policies.retain(|_, _| false).map_err(any)?;
            for table in [
                &mut defs,
                &mut containers,
                &mut rules,
                &mut history,
                &mut network,
                &mut volumes,
                &mut secrets,
            ] {
                table.retain(|_, _| false).map_err(any)?;
            }
            all = Touched {
                nodes: st.nodes().keys().copied().collect(),
                definitions: st.definitions().keys().cloned().collect(),
                containers: st.containers().keys().cloned().collect(),
                rules: st.rules().keys().cloned().collect(),
                history: st.history().keys().cloned().collect(),
                network: st.network().keys().cloned().collect(),
                policies: st.policies().keys().copied().collect(),
                volumes: st.volumes().keys().cloned().collect(),
                secrets: st.secrets().keys().cloned().collect(),
            };
            &all
        }
        Rows::Touched(t) => t,
    };
    write_id_rows(&mut nodes, &t.nodes, st.nodes())?;
    write_id_rows(&mut policies, &t.policies, st.policies())?;
    write_rows(&mut defs, &t.definitions, st.definitions())?;
    write_rows(&mut containers, &t.containers, st.containers())?;
    write_rows(&mut rules, &t.rules, st.rules())?;
    write_rows(&mut history, &t.history, st.history())?;
    write_rows(&mut network, &t.network, st.network())?;
    write_rows(&mut volumes, &t.volumes, st.volumes())?;
    write_rows(&mut secrets, &t.secrets, st.secrets())?;
    Ok(())
}

/// Writes the rows of `keys` of a table keyed by node id: the record's encoding, or no
/// row when the state no longer holds it.
fn write_id_rows<'k, V: Serialize + Clone>(
    table: &mut redb::Table<u64, &[u8]>,
    keys: impl IntoIterator<Item = &'k u64>,
    records: &Table<u64, V>,
) -> Result<(), AnyError> {
    for k in keys {
        match records.get(k) {
            Some(v) => table.insert(*k, enc(v)?.as_slice()).map(drop),
            None => table.remove(*k).map(drop),
        }
        .map_err(any)?;
    }
    Ok(())
}

/// Writes the rows of `keys` of a table keyed by name: the record's encoding, or no row
/// when the state no longer holds it.
fn write_rows<'k, V: Serialize + Clone>(
    table: &mut redb::Table<&str, &[u8]>,
    keys: impl IntoIterator<Item = &'k String>,
    records: &Table<String, V>,
) -> Result<(), AnyError> {
    for k in keys {
        match records.get(k) {
            Some(v) => table.insert(k.as_str(), enc(v)?.as_slice()).map(drop),
            None => table.remove(k.as_str()).map(drop),
        }
        .map_err(any)?;
    }
    Ok(())
}

/// Every row of a table keyed by node id.
fn read_id_rows<V: for<'de> Deserialize<'de> + Clone>(
    tx: &redb::ReadTransaction,
    table: TableDefinition<u64, &[u8]>,
) -> Result<Table<u64, V>, AnyError> {
    let mut rows = Table::new();
    for item in tx.open_table(table).map_err(any)?.iter().map_err(any)? {
        let (k, v) = item.map_err(any)?;
        rows.insert(k.value(), dec::<V>(v.value())?);
    }
    Ok(rows)
}

/// Every row of a table keyed by name.
fn read_rows<V: for<'de> Deserialize<'de> + Clone>(
    tx: &redb::ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Table<String, V>, AnyError> {
    let mut rows = Table::new();
    for item in tx.open_table(table).map_err(any)?.iter().map_err(any)? {
        let (k, v) = item.map_err(any)?;
        rows.insert(k.value().to_string(), dec::<V>(v.value())?);
    }
    Ok(rows)
}

/// Loads the applied state from its rows (empty on a fresh database).
pub(super) fn read_applied(db: &Database) -> Result<Applied, AnyError> {
    let tx = db.begin_read().map_err(any)?;
    let sm = tx.open_table(SM).map_err(any)?;
    if sm.get("applied").map_err(any)?.is_some() {
        return Err(AnyError::error(
            "this data directory holds the state in the layout of an older haconiwa \
             (one `applied` row); start the member with a fresh data directory and let \
             it join again",
        ));
    }
    let meta: AppliedMeta = match sm.get("meta").map_err(any)? {
        Some(v) => dec(v.value())?,
        None => AppliedMeta::default(),
    };
    let nodes = read_id_rows::<NodeRecord>(&tx, SM_NODES)?;
    let policies = read_id_rows::<NodePolicy>(&tx, SM_POLICIES)?;
    let definitions = read_rows::<Definition>(&tx, SM_DEFINITIONS)?;
    let containers = read_rows::<ContainerRecord>(&tx, SM_CONTAINERS)?;
    let rules = read_rows::<RuleRecord>(&tx, SM_RULES)?;
    let history = read_rows::<RuleHistory>(&tx, SM_HISTORY)?;
    let network = read_rows(&tx, SM_NETWORK)?;
    let volumes = read_rows(&tx, SM_VOLUMES)?;
    let secrets = read_rows(&tx, SM_SECRETS)?;
    Ok(Applied {
        last_applied: meta.last_applied,
        last_membership: meta.last_membership,
        state: ClusterState::from_records(
            nodes,
            definitions,
            containers,
            rules,
            meta.max_node_id,
            meta.next_seq,
            history,
        )
        .with_network(network)
        .with_policies(policies)
        .with_storage(volumes, secrets),
    })
}
