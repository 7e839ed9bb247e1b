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
