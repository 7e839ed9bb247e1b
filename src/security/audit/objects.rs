//! What a utility statement acts on, read from its parse tree: the audit log's operation_type
//! (from the command tag), object_type, schema_name and object_name. Statements not listed here
//! still get their operation and object type from the tag; only the object name is then empty.

use super::queue::AuditEvent;
use admin_toolkit_core::audit::operation_for_tag;
use pgrx::pg_sys::{self, NodeTag};
use std::ffi::{c_char, CStr};

unsafe fn text(p: *const c_char) -> Option<String> {
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

unsafe fn list_len(list: *mut pg_sys::List) -> i32 {
    if list.is_null() {
        0
    } else {
        unsafe { (*list).length }
    }
}

unsafe fn nth<T>(list: *mut pg_sys::List, n: i32) -> *mut T {
    unsafe { pg_sys::list_nth(list, n).cast() }
}

unsafe fn is_a(node: *mut pg_sys::Node, tag: NodeTag) -> bool {
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// Names in a list of names (String nodes), dotted: schema.name.
unsafe fn dotted(names: *mut pg_sys::List) -> Option<String> {
    let mut parts = Vec::new();
    for i in 0..unsafe { list_len(names) } {
        let node = unsafe { nth::<pg_sys::Node>(names, i) };
        if unsafe { is_a(node, NodeTag::T_String) } {
            parts.extend(unsafe { text((*node.cast::<pg_sys::String>()).sval) });
        }
    }
    (!parts.is_empty()).then(|| parts.join("."))
}

unsafe fn range_var(rv: *mut pg_sys::RangeVar, event: &mut AuditEvent) {
    if rv.is_null() {
        return;
    }
    unsafe {
        if let Some(schema) = text((*rv).schemaname) {
            event.schema.set(schema.as_bytes());
        }
        if let Some(name) = text((*rv).relname) {
            event.object.set(name.as_bytes());
        }
    }
}

unsafe fn role_spec(spec: *mut pg_sys::RoleSpec) -> Option<String> {
    if spec.is_null() {
        None
    } else {
        unsafe { text((*spec).rolename) }
    }
}

/// Name of one object node of GRANT or DROP: a table (RangeVar), a name, or a qualified name.
unsafe fn object_node_name(o: *mut pg_sys::Node) -> Option<String> {
    unsafe {
        if is_a(o, NodeTag::T_RangeVar) {
            let rv = o.cast::<pg_sys::RangeVar>();
            let name = text((*rv).relname)?;
            Some(match text((*rv).schemaname) {
                Some(s) => format!("{s}.{name}"),
                None => name,
            })
        } else if is_a(o, NodeTag::T_String) {
            text((*o.cast::<pg_sys::String>()).sval)
        } else if is_a(o, NodeTag::T_List) {
            dotted(o.cast())
        } else {
            None
        }
    }
}

unsafe fn object_list_names(objects: *mut pg_sys::List) -> Vec<String> {
    unsafe {
        (0..list_len(objects))
            .filter_map(|i| object_node_name(nth(objects, i)))
            .collect()
    }
}

/// The object of a list-valued statement: first element, with the count when there are more.
fn first_of(mut names: Vec<String>) -> Option<String> {
    match names.len() {
        0 => None,
        1 => names.pop(),
        n => Some(format!("{} (+{} more)", names[0], n - 1)),
    }
}

/// The parts of an object's name, however the parse tree holds it: a table (RangeVar), a name,
/// a list of names, a function with its arguments.
unsafe fn name_parts(o: *mut pg_sys::Node) -> Vec<String> {
    unsafe {
        if is_a(o, NodeTag::T_RangeVar) {
            let rv = o.cast::<pg_sys::RangeVar>();
            [text((*rv).schemaname), text((*rv).relname)]
                .into_iter()
                .flatten()
                .collect()
        } else if is_a(o, NodeTag::T_String) {
            text((*o.cast::<pg_sys::String>()).sval)
                .into_iter()
                .collect()
        } else if is_a(o, NodeTag::T_List) {
            dotted(o.cast())
                .map(|d| d.split('.').map(str::to_string).collect())
                .unwrap_or_default()
        } else if is_a(o, NodeTag::T_ObjectWithArgs) {
            dotted((*o.cast::<pg_sys::ObjectWithArgs>()).objname)
                .map(|d| d.split('.').map(str::to_string).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}

/// Sets schema and object from a name's parts: schema.name when there are two (for the kinds
/// that live in a schema), the dotted whole otherwise (a column: table.column).
fn set_name(event: &mut AuditEvent, parts: &[String], in_schema: bool) {
    match parts {
        [] => {}
        [schema, name] if in_schema => {
            event.schema.set(schema.as_bytes());
            event.object.set(name.as_bytes());
        }
        _ => event.object.set(parts.join(".").as_bytes()),
    }
}

/// Whether objects of this kind are named schema.name.
fn lives_in_schema(t: pg_sys::ObjectType::Type) -> bool {
    use pg_sys::ObjectType::*;
    matches!(
        t,
        OBJECT_TABLE
            | OBJECT_SEQUENCE
            | OBJECT_VIEW
            | OBJECT_MATVIEW
            | OBJECT_INDEX
            | OBJECT_FOREIGN_TABLE
            | OBJECT_FUNCTION
            | OBJECT_PROCEDURE
            | OBJECT_ROUTINE
            | OBJECT_AGGREGATE
            | OBJECT_TYPE
            | OBJECT_DOMAIN
            | OBJECT_COLLATION
            | OBJECT_CONVERSION
            | OBJECT_OPERATOR
            | OBJECT_STATISTIC_EXT
            | OBJECT_TSCONFIGURATION
            | OBJECT_TSDICTIONARY
    )
}

/// An object named by a kind and a node (COMMENT, SECURITY LABEL, ALTER ... RENAME / OWNER /
/// SET SCHEMA): the kind becomes the object type.
unsafe fn kind_and_object(
    event: &mut AuditEvent,
    kind: pg_sys::ObjectType::Type,
    relation: *mut pg_sys::RangeVar,
    object: *mut pg_sys::Node,
) -> Option<String> {
    let parts = unsafe {
        if relation.is_null() {
            name_parts(object)
        } else {
            name_parts(relation.cast())
        }
    };
    set_name(event, &parts, lives_in_schema(kind) || !relation.is_null());
    Some(object_type_name(kind).to_string())
}

/// Fills operation, object type and object of `event` from a utility statement's parse tree.
///
/// # Safety
/// `node` must be a valid utility statement from the server's parser.
pub unsafe fn describe_utility(node: *mut pg_sys::Node, event: &mut AuditEvent) {
    if node.is_null() {
        return;
    }
    let tag = unsafe { text(pg_sys::GetCommandTagName(pg_sys::CreateCommandTag(node))) }
        .unwrap_or_default();
    let (operation, mut object_type) = operation_for_tag(&tag);
    event.operation.set(operation.as_bytes());
    unsafe {
        match (*node).type_ {
            NodeTag::T_CreateStmt => {
                range_var((*node.cast::<pg_sys::CreateStmt>()).relation, event)
            }
            NodeTag::T_AlterTableStmt => {
                range_var((*node.cast::<pg_sys::AlterTableStmt>()).relation, event)
            }
            NodeTag::T_IndexStmt => range_var((*node.cast::<pg_sys::IndexStmt>()).relation, event),
            NodeTag::T_CreateRoleStmt => event.object.set(
                text((*node.cast::<pg_sys::CreateRoleStmt>()).role)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_AlterRoleStmt => event.object.set(
                role_spec((*node.cast::<pg_sys::AlterRoleStmt>()).role)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_DropRoleStmt => {
                let roles = (*node.cast::<pg_sys::DropRoleStmt>()).roles;
                let names = (0..list_len(roles))
                    .filter_map(|i| role_spec(nth(roles, i)))
                    .collect();
                event
                    .object
                    .set(first_of(names).unwrap_or_default().as_bytes());
            }
            NodeTag::T_CreateSchemaStmt => event.object.set(
                text((*node.cast::<pg_sys::CreateSchemaStmt>()).schemaname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_CreateExtensionStmt => event.object.set(
                text((*node.cast::<pg_sys::CreateExtensionStmt>()).extname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_CreateFunctionStmt => event.object.set(
                dotted((*node.cast::<pg_sys::CreateFunctionStmt>()).funcname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_AlterSystemStmt => {
                let set = (*node.cast::<pg_sys::AlterSystemStmt>()).setstmt;
                if !set.is_null() {
                    event
                        .object
                        .set(text((*set).name).unwrap_or_default().as_bytes());
                }
            }
            NodeTag::T_GrantStmt => {
                let grant = node.cast::<pg_sys::GrantStmt>();
                object_type = Some(object_type_name((*grant).objtype).to_string());
                let names = object_list_names((*grant).objects);
                event
                    .object
                    .set(first_of(names).unwrap_or_default().as_bytes());
            }
            NodeTag::T_GrantRoleStmt => {
                let granted = (*node.cast::<pg_sys::GrantRoleStmt>()).granted_roles;
                let names = (0..list_len(granted))
                    .filter_map(|i| text((*nth::<pg_sys::AccessPriv>(granted, i)).priv_name))
                    .collect();
                event
                    .object
                    .set(first_of(names).unwrap_or_default().as_bytes());
            }
            NodeTag::T_CommentStmt => {
                let c = node.cast::<pg_sys::CommentStmt>();
                object_type =
                    kind_and_object(event, (*c).objtype, std::ptr::null_mut(), (*c).object);
            }
            NodeTag::T_SecLabelStmt => {
                let c = node.cast::<pg_sys::SecLabelStmt>();
                object_type =
                    kind_and_object(event, (*c).objtype, std::ptr::null_mut(), (*c).object);
            }
            NodeTag::T_RenameStmt => {
                let r = node.cast::<pg_sys::RenameStmt>();
                let kind = if (*r).renameType == pg_sys::ObjectType::OBJECT_COLUMN {
                    (*r).relationType
                } else {
                    (*r).renameType
                };
                object_type = kind_and_object(event, kind, (*r).relation, (*r).object);
            }
            NodeTag::T_AlterOwnerStmt => {
                let a = node.cast::<pg_sys::AlterOwnerStmt>();
                object_type = kind_and_object(event, (*a).objectType, (*a).relation, (*a).object);
            }
            NodeTag::T_AlterObjectSchemaStmt => {
                let a = node.cast::<pg_sys::AlterObjectSchemaStmt>();
                object_type = kind_and_object(event, (*a).objectType, (*a).relation, (*a).object);
            }
            NodeTag::T_ViewStmt => range_var((*node.cast::<pg_sys::ViewStmt>()).view, event),
            NodeTag::T_CreateTableAsStmt => {
                let into = (*node.cast::<pg_sys::CreateTableAsStmt>()).into;
                if !into.is_null() {
                    range_var((*into).rel, event);
                }
            }
            NodeTag::T_CreateSeqStmt => {
                range_var((*node.cast::<pg_sys::CreateSeqStmt>()).sequence, event)
            }
            NodeTag::T_AlterSeqStmt => {
                range_var((*node.cast::<pg_sys::AlterSeqStmt>()).sequence, event)
            }
            NodeTag::T_CreateTrigStmt => {
                range_var((*node.cast::<pg_sys::CreateTrigStmt>()).relation, event)
            }
            NodeTag::T_CreatePolicyStmt => {
                range_var((*node.cast::<pg_sys::CreatePolicyStmt>()).table, event)
            }
            NodeTag::T_AlterPolicyStmt => {
                range_var((*node.cast::<pg_sys::AlterPolicyStmt>()).table, event)
            }
            NodeTag::T_CreatedbStmt => event.object.set(
                text((*node.cast::<pg_sys::CreatedbStmt>()).dbname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_DropdbStmt => event.object.set(
                text((*node.cast::<pg_sys::DropdbStmt>()).dbname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_AlterDatabaseStmt => event.object.set(
                text((*node.cast::<pg_sys::AlterDatabaseStmt>()).dbname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_AlterDatabaseSetStmt => event.object.set(
                text((*node.cast::<pg_sys::AlterDatabaseSetStmt>()).dbname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_AlterExtensionStmt => event.object.set(
                text((*node.cast::<pg_sys::AlterExtensionStmt>()).extname)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_CreateTableSpaceStmt => event.object.set(
                text((*node.cast::<pg_sys::CreateTableSpaceStmt>()).tablespacename)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            NodeTag::T_AlterFunctionStmt => {
                let f = (*node.cast::<pg_sys::AlterFunctionStmt>()).func;
                set_name(event, &name_parts(f.cast()), true);
            }
            NodeTag::T_DefineStmt => {
                let d = node.cast::<pg_sys::DefineStmt>();
                set_name(event, &name_parts((*d).defnames.cast()), true);
            }
            NodeTag::T_CreateDomainStmt => {
                let d = node.cast::<pg_sys::CreateDomainStmt>();
                set_name(event, &name_parts((*d).domainname.cast()), true);
            }
            NodeTag::T_CompositeTypeStmt => {
                range_var((*node.cast::<pg_sys::CompositeTypeStmt>()).typevar, event)
            }
            NodeTag::T_CreateEnumStmt => {
                let e = node.cast::<pg_sys::CreateEnumStmt>();
                set_name(event, &name_parts((*e).typeName.cast()), true);
            }
            NodeTag::T_CreateForeignTableStmt => range_var(
                (*node.cast::<pg_sys::CreateForeignTableStmt>())
                    .base
                    .relation,
                event,
            ),
            NodeTag::T_DropStmt => {
                let names = object_list_names((*node.cast::<pg_sys::DropStmt>()).objects);
                event
                    .object
                    .set(first_of(names).unwrap_or_default().as_bytes());
            }
            _ => {}
        }
    }
    if let Some(t) = object_type {
        event.object_type.set(t.as_bytes());
    }
}

fn object_type_name(t: pg_sys::ObjectType::Type) -> &'static str {
    use pg_sys::ObjectType::*;
    match t {
        OBJECT_TABLE => "table",
        OBJECT_SEQUENCE => "sequence",
        OBJECT_VIEW => "view",
        OBJECT_MATVIEW => "materialized view",
        OBJECT_INDEX => "index",
        OBJECT_FOREIGN_TABLE => "foreign table",
        OBJECT_COLUMN => "column",
        OBJECT_ROLE => "role",
        OBJECT_EXTENSION => "extension",
        OBJECT_TRIGGER => "trigger",
        OBJECT_POLICY => "policy",
        OBJECT_TABCONSTRAINT | OBJECT_DOMCONSTRAINT => "constraint",
        OBJECT_EVENT_TRIGGER => "event trigger",
        OBJECT_PUBLICATION => "publication",
        OBJECT_SUBSCRIPTION => "subscription",
        OBJECT_AGGREGATE => "aggregate",
        OBJECT_COLLATION => "collation",
        OBJECT_SCHEMA => "schema",
        OBJECT_FUNCTION | OBJECT_PROCEDURE | OBJECT_ROUTINE => "function",
        OBJECT_DATABASE => "database",
        OBJECT_TYPE | OBJECT_DOMAIN => "type",
        OBJECT_LARGEOBJECT => "large object",
        OBJECT_TABLESPACE => "tablespace",
        OBJECT_FDW => "foreign-data wrapper",
        OBJECT_FOREIGN_SERVER => "foreign server",
        OBJECT_LANGUAGE => "language",
        OBJECT_PARAMETER_ACL => "parameter",
        _ => "object",
    }
}
