//! The unsafe boundary: the few functions of Nix's C API (Nix >= 2.24, `nix_api_util.h`,
//! `nix_api_value.h`, `nix_api_expr.h`) the plugin calls, declared by hand, and the two
//! primops built on them.
//!
//! Nix calls `nix_plugin_entry` once after it loads the library (`plugin-files`), before any
//! evaluation; it registers the primops, which then appear as `builtins.microvmValidate` and
//! `builtins.microvmRender`.
//!
//! Rules kept here, so the rest of the crate is safe Rust:
//! - A primop never unwinds into Nix: a panic is caught and becomes an evaluation error.
//! - A primop either initialises `ret` or sets an error on its context, never neither (Nix
//!   throws "Error from custom function: <message>" when the context holds an error).
//! - Every value the C API hands out with a reference (`nix_alloc_value`,
//!   `nix_get_attr_byidx`, `nix_get_list_byidx`) is released with `nix_value_decref` (`Owned`).
//! - Strings cross as (pointer, length) copies; nothing Nix owns is kept past a call.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use serde_json::{Map, Number, Value};

use crate::{MAX_BYTES, MAX_DEPTH, Refusal, Spec};

#[repr(C)]
struct NixContext {
    _opaque: [u8; 0],
}
#[repr(C)]
struct EvalState {
    _opaque: [u8; 0],
}
#[repr(C)]
struct NixValue {
    _opaque: [u8; 0],
}
#[repr(C)]
struct PrimOp {
    _opaque: [u8; 0],
}

/// `nix_err`: 0 is success, negative values are errors.
type NixErr = c_int;
const NIX_OK: NixErr = 0;
const NIX_ERR_NIX_ERROR: NixErr = -4;

/// `ValueType`, in the order of `nix_api_value.h`.
type ValueType = c_int;
const NIX_TYPE_INT: ValueType = 1;
const NIX_TYPE_FLOAT: ValueType = 2;
const NIX_TYPE_BOOL: ValueType = 3;
const NIX_TYPE_STRING: ValueType = 4;
const NIX_TYPE_PATH: ValueType = 5;
const NIX_TYPE_NULL: ValueType = 6;
const NIX_TYPE_ATTRS: ValueType = 7;
const NIX_TYPE_LIST: ValueType = 8;

type PrimOpFun = unsafe extern "C" fn(
    user_data: *mut c_void,
    context: *mut NixContext,
    state: *mut EvalState,
    args: *mut *mut NixValue,
    ret: *mut NixValue,
);
type GetStringCallback =
    unsafe extern "C" fn(start: *const c_char, n: c_uint, user_data: *mut c_void);

unsafe extern "C" {
    fn nix_c_context_create() -> *mut NixContext;
    fn nix_c_context_free(context: *mut NixContext);
    fn nix_err_msg(
        context: *mut NixContext,
        read_context: *const NixContext,
        n: *mut c_uint,
    ) -> *const c_char;
    fn nix_set_err_msg(context: *mut NixContext, err: NixErr, msg: *const c_char) -> NixErr;

    fn nix_alloc_primop(
        context: *mut NixContext,
        fun: PrimOpFun,
        arity: c_int,
        name: *const c_char,
        args: *mut *const c_char,
        doc: *const c_char,
        user_data: *mut c_void,
    ) -> *mut PrimOp;
    fn nix_register_primop(context: *mut NixContext, primop: *mut PrimOp) -> NixErr;

    fn nix_alloc_value(context: *mut NixContext, state: *mut EvalState) -> *mut NixValue;
    fn nix_value_decref(context: *mut NixContext, value: *mut NixValue) -> NixErr;
    fn nix_value_force(
        context: *mut NixContext,
        state: *mut EvalState,
        value: *mut NixValue,
    ) -> NixErr;
    fn nix_get_type(context: *mut NixContext, value: *const NixValue) -> ValueType;
    fn nix_get_typename(context: *mut NixContext, value: *const NixValue) -> *const c_char;
    fn nix_get_bool(context: *mut NixContext, value: *const NixValue) -> bool;
    fn nix_get_int(context: *mut NixContext, value: *const NixValue) -> i64;
    fn nix_get_float(context: *mut NixContext, value: *const NixValue) -> f64;
    fn nix_get_string(
        context: *mut NixContext,
        value: *const NixValue,
        callback: GetStringCallback,
        user_data: *mut c_void,
    ) -> NixErr;
    fn nix_get_list_size(context: *mut NixContext, value: *const NixValue) -> c_uint;
    fn nix_get_list_byidx(
        context: *mut NixContext,
        value: *const NixValue,
        state: *mut EvalState,
        ix: c_uint,
    ) -> *mut NixValue;
    fn nix_get_attrs_size(context: *mut NixContext, value: *const NixValue) -> c_uint;
    fn nix_get_attr_byidx(
        context: *mut NixContext,
        value: *const NixValue,
        state: *mut EvalState,
        i: c_uint,
        name: *mut *const c_char,
    ) -> *mut NixValue;
    fn nix_init_string(context: *mut NixContext, value: *mut NixValue, s: *const c_char) -> NixErr;
    fn nix_expr_eval_from_string(
        context: *mut NixContext,
        state: *mut EvalState,
        expr: *const c_char,
        path: *const c_char,
        value: *mut NixValue,
    ) -> NixErr;
    fn nix_value_call(
        context: *mut NixContext,
        state: *mut EvalState,
        function: *mut NixValue,
        arg: *mut NixValue,
        value: *mut NixValue,
    ) -> NixErr;
}

#[cfg(nix_state_offset)]
unsafe extern "C" {
    /// shim/eval_state_offset.cc: where the C API's state wrapper holds the evaluator's state.
    fn microvm_nix_eval_state_offset() -> usize;
}

/// The state a primop receives, as the C API expects it. Nix 2.24 to 2.33 pass the evaluator's
/// own state where the C API wants its wrapper around it (see shim/eval_state_offset.cc), so
/// every C API call would read the state at the wrong place: the pointer is moved back to where
/// the wrapper would begin. The C API only ever reads the state member through it.
fn c_api_state(state: *mut EvalState) -> *mut EvalState {
    #[cfg(nix_state_offset)]
    {
        // SAFETY: a plain function of the shim, returning a constant.
        state.wrapping_byte_sub(unsafe { microvm_nix_eval_state_offset() })
    }
    #[cfg(not(nix_state_offset))]
    {
        state
    }
}

/// Called by Nix after it loads the plugin.
#[unsafe(no_mangle)]
pub extern "C" fn nix_plugin_entry() {
    register(
        c"microvmValidate",
        validate_primop,
        c"Validates a microVM runner spec (an attribute set or JSON text) as `microvm-codegen validate` does and returns it as the generator reads it; refuses it with every problem found.",
    );
    register(
        c"microvmRender",
        render_primop,
        c"Renders the runner of a microVM runner spec (an attribute set or JSON text): `{ \"<path>\" = { type = \"file\"; text; executable; } or { type = \"symlink\"; target; }; }`, the tree `microvm-codegen generate` writes.",
    );
}

fn register(name: &'static CStr, fun: PrimOpFun, doc: &'static CStr) {
    // Nix copies the name and the argument names; the documentation is kept as a pointer,
    // hence 'static.
    let mut args = [c"spec".as_ptr(), ptr::null()];
    // SAFETY: a fresh context, valid C strings, a null-terminated argument list.
    unsafe {
        let context = nix_c_context_create();
        let primop = nix_alloc_primop(
            context,
            fun,
            1,
            name.as_ptr(),
            args.as_mut_ptr(),
            doc.as_ptr(),
            ptr::null_mut(),
        );
        if primop.is_null() || nix_register_primop(context, primop) != NIX_OK {
            eprintln!(
                "microvm-nix-plugin: cannot register builtins.{}: {}",
                name.to_string_lossy(),
                last_error(context)
            );
        }
        nix_c_context_free(context);
    }
}

unsafe extern "C" fn validate_primop(
    _user_data: *mut c_void,
    context: *mut NixContext,
    state: *mut EvalState,
    args: *mut *mut NixValue,
    ret: *mut NixValue,
) {
    // SAFETY: Nix passes a valid context and state, one argument and an output value.
    unsafe {
        primop(
            "microvmValidate",
            crate::validate,
            context,
            state,
            args,
            ret,
        );
    }
}

unsafe extern "C" fn render_primop(
    _user_data: *mut c_void,
    context: *mut NixContext,
    state: *mut EvalState,
    args: *mut *mut NixValue,
    ret: *mut NixValue,
) {
    // SAFETY: as for validate_primop.
    unsafe {
        primop("microvmRender", crate::render, context, state, args, ret);
    }
}

/// Runs one primop: its argument read into JSON, `function` on it, the result back as a Nix
/// value in `ret`, or the refusal as the evaluation error.
///
/// # Safety
/// `context`, `state`, `args` (one element) and `ret` are what Nix passes a primop.
unsafe fn primop(
    name: &str,
    function: fn(Spec) -> Result<Value, Refusal>,
    context: *mut NixContext,
    state: *mut EvalState,
    args: *mut *mut NixValue,
    ret: *mut NixValue,
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let nix = Nix {
            context,
            state: c_api_state(state),
        };
        // SAFETY: a primop of arity 1 gets one argument.
        let argument = unsafe { *args };
        let result = match nix.spec_argument(name, argument)? {
            Argument::Text(text) => function(Spec::Text(&text))?,
            Argument::Attrs(value) => function(Spec::Attrs(&value))?,
        };
        nix.give_back(name, &result, ret)
    }));
    let message = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(Refusal(message))) => message,
        Err(_) => format!("{name}: internal error in microvm-nix-plugin (please report it)"),
    };
    // A message with a NUL byte (from the user's text) is cut there rather than lost.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: the context Nix passed, a valid C string.
    unsafe {
        nix_set_err_msg(context, NIX_ERR_NIX_ERROR, message.as_ptr());
    }
}

/// The message of the last error on `context`.
///
/// # Safety
/// `context` is valid.
unsafe fn last_error(context: *mut NixContext) -> String {
    let mut length: c_uint = 0;
    // SAFETY: nix_err_msg reads `context` and writes the length; the message lives until the
    // next call on the context, and is copied here.
    unsafe {
        let message = nix_err_msg(ptr::null_mut(), context, &mut length);
        if message.is_null() {
            return "unknown error".to_owned();
        }
        let bytes = std::slice::from_raw_parts(message.cast::<u8>(), length as usize);
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Takes `bytes` (and one for the value itself) from what a spec may still hold.
fn spend(budget: &mut u64, bytes: usize, at: &str) -> Result<(), Refusal> {
    *budget = budget.saturating_sub(bytes as u64 + 1);
    if *budget == 0 {
        Err(Refusal(format!(
            "microvm::spec::too_large: the spec is more than {} MiB (at {at}); a runner spec is a few kB",
            MAX_BYTES >> 20
        )))
    } else {
        Ok(())
    }
}

/// The primop's argument, read.
enum Argument {
    Text(String),
    Attrs(Value),
}

/// A value the C API gave with a reference, released when dropped.
struct Owned<'n> {
    nix: &'n Nix,
    value: *mut NixValue,
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        // SAFETY: the value was handed out with a reference this struct owns.
        unsafe {
            nix_value_decref(self.nix.context, self.value);
        }
    }
}

/// The context and state of one primop call.
struct Nix {
    context: *mut NixContext,
    state: *mut EvalState,
}

unsafe extern "C" fn copy_string(start: *const c_char, n: c_uint, user_data: *mut c_void) {
    // SAFETY: Nix passes `n` bytes at `start`; `user_data` is the Vec below.
    unsafe {
        let out = &mut *user_data.cast::<Vec<u8>>();
        out.extend_from_slice(std::slice::from_raw_parts(start.cast::<u8>(), n as usize));
    }
}

impl Nix {
    fn error(&self, what: String) -> Refusal {
        // SAFETY: the primop's context.
        Refusal(format!("{what}: {}", unsafe { last_error(self.context) }))
    }

    fn check(&self, status: NixErr, what: impl FnOnce() -> String) -> Result<(), Refusal> {
        if status == NIX_OK {
            Ok(())
        } else {
            Err(self.error(what()))
        }
    }

    fn owned(
        &self,
        value: *mut NixValue,
        what: impl FnOnce() -> String,
    ) -> Result<Owned<'_>, Refusal> {
        if value.is_null() {
            Err(self.error(what()))
        } else {
            Ok(Owned { nix: self, value })
        }
    }

    fn type_of(&self, value: *mut NixValue) -> ValueType {
        // SAFETY: a forced value of this state.
        unsafe { nix_get_type(self.context, value) }
    }

    fn type_name(&self, value: *mut NixValue) -> String {
        // SAFETY: a forced value; the name is a static string of Nix.
        unsafe {
            let name = nix_get_typename(self.context, value);
            if name.is_null() {
                "a value".to_owned()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            }
        }
    }

    fn string(&self, value: *mut NixValue, at: &str) -> Result<String, Refusal> {
        let mut bytes = Vec::new();
        // SAFETY: a string value; the callback appends to `bytes` during the call only.
        let status = unsafe {
            nix_get_string(
                self.context,
                value,
                copy_string,
                (&raw mut bytes).cast::<c_void>(),
            )
        };
        self.check(status, || format!("cannot read the string at {at}"))?;
        String::from_utf8(bytes).map_err(|_| Refusal(format!("the string at {at} is not UTF-8")))
    }

    /// Evaluates one of Nix's builtins by name (`builtins.fromJSON`).
    fn builtin(&self, expression: &CStr) -> Result<Owned<'_>, Refusal> {
        // SAFETY: a new value of this state, a valid expression and base path.
        unsafe {
            let value = self.owned(nix_alloc_value(self.context, self.state), || {
                "cannot allocate a value".to_owned()
            })?;
            let status = nix_expr_eval_from_string(
                self.context,
                self.state,
                expression.as_ptr(),
                c"/".as_ptr(),
                value.value,
            );
            self.check(status, || {
                format!("cannot evaluate {}", expression.to_string_lossy())
            })?;
            Ok(value)
        }
    }

    /// Reads the argument: JSON text, or an attribute set turned into JSON.
    fn spec_argument(&self, primop: &str, argument: *mut NixValue) -> Result<Argument, Refusal> {
        // SAFETY: the primop's argument, of this state.
        let status = unsafe { nix_value_force(self.context, self.state, argument) };
        self.check(status, || format!("{primop}: evaluating its argument"))?;
        match self.type_of(argument) {
            NIX_TYPE_STRING => {
                // Its size is checked, with the code, where the text is read.
                Ok(Argument::Text(self.string(argument, "the argument")?))
            }
            NIX_TYPE_ATTRS => {
                let mut budget = MAX_BYTES;
                let value = self
                    .json(argument, "spec", 0, &mut budget)
                    .map_err(|Refusal(why)| Refusal(format!("{primop}: {why}")))?;
                Ok(Argument::Attrs(value))
            }
            _ => Err(Refusal(format!(
                "{primop}: its argument must be a runner spec, as an attribute set or as JSON text; it is {}",
                self.type_name(argument)
            ))),
        }
    }

    /// A forced value as JSON, as `builtins.toJSON` writes it: a set with `outPath` (a
    /// derivation) is that string, a path is copied to the store. Deeper than `MAX_DEPTH` or
    /// larger than `budget` bytes is refused before it is read further.
    fn json(
        &self,
        value: *mut NixValue,
        at: &str,
        depth: usize,
        budget: &mut u64,
    ) -> Result<Value, Refusal> {
        if depth > MAX_DEPTH {
            return Err(Refusal(format!(
                "the spec nests deeper than {MAX_DEPTH} levels (at {at}); a runner spec is a few levels deep"
            )));
        }
        spend(budget, 0, at)?;
        // SAFETY (every call below): `value` is a forced value of this state.
        match self.type_of(value) {
            NIX_TYPE_NULL => Ok(Value::Null),
            NIX_TYPE_BOOL => Ok(Value::Bool(unsafe { nix_get_bool(self.context, value) })),
            NIX_TYPE_INT => Ok(Value::from(unsafe { nix_get_int(self.context, value) })),
            NIX_TYPE_FLOAT => {
                let float = unsafe { nix_get_float(self.context, value) };
                Number::from_f64(float)
                    .map(Value::Number)
                    .ok_or_else(|| Refusal(format!("{at} is {float}, which JSON cannot hold")))
            }
            NIX_TYPE_STRING => {
                let text = self.string(value, at)?;
                spend(budget, text.len(), at)?;
                Ok(Value::String(text))
            }
            NIX_TYPE_PATH => {
                // As toJSON does: the path is copied to the store and named by its store path.
                let to_json = self.builtin(c"builtins.toJSON")?;
                let out = self.call(&to_json, value, || {
                    format!("copying the path at {at} to the store")
                })?;
                let text = self.string(out.value, at)?;
                spend(budget, text.len(), at)?;
                serde_json::from_str(&text).map_err(|e| Refusal(format!("{at}: {e}")))
            }
            NIX_TYPE_LIST => {
                let size = unsafe { nix_get_list_size(self.context, value) };
                let mut items = Vec::with_capacity(size.min(1024) as usize);
                for index in 0..size {
                    let here = format!("{at}[{index}]");
                    let item = self.owned(
                        unsafe { nix_get_list_byidx(self.context, value, self.state, index) },
                        || format!("evaluating {here}"),
                    )?;
                    items.push(self.json(item.value, &here, depth + 1, budget)?);
                }
                Ok(Value::Array(items))
            }
            NIX_TYPE_ATTRS => {
                let size = unsafe { nix_get_attrs_size(self.context, value) };
                let mut fields = std::collections::BTreeMap::new();
                let mut out_path = None;
                for index in 0..size {
                    let mut name: *const c_char = ptr::null();
                    let attr = unsafe {
                        nix_get_attr_byidx(self.context, value, self.state, index, &mut name)
                    };
                    let name = if name.is_null() {
                        String::new()
                    } else {
                        unsafe { CStr::from_ptr(name) }
                            .to_string_lossy()
                            .into_owned()
                    };
                    let here = format!("{at}.{name}");
                    let attr = self.owned(attr, || format!("evaluating {here}"))?;
                    spend(budget, name.len(), &here)?;
                    let json = self.json(attr.value, &here, depth + 1, budget)?;
                    if name == "outPath" {
                        out_path = Some(json.clone());
                    }
                    fields.insert(name, json);
                }
                match out_path {
                    Some(path) => Ok(path),
                    None => Ok(Value::Object(fields.into_iter().collect::<Map<_, _>>())),
                }
            }
            _ => Err(Refusal(format!(
                "{at} is {}, which a runner spec cannot hold",
                self.type_name(value)
            ))),
        }
    }

    /// `function argument`, evaluated.
    fn call(
        &self,
        function: &Owned,
        argument: *mut NixValue,
        what: impl FnOnce() -> String,
    ) -> Result<Owned<'_>, Refusal> {
        // SAFETY: values of this state; `out` is a new value.
        unsafe {
            let out = self.owned(nix_alloc_value(self.context, self.state), || {
                "cannot allocate a value".to_owned()
            })?;
            let status = nix_value_call(
                self.context,
                self.state,
                function.value,
                argument,
                out.value,
            );
            self.check(status, what)?;
            let status = nix_value_force(self.context, self.state, out.value);
            self.check(status, || "forcing a result".to_owned())?;
            Ok(out)
        }
    }

    /// Writes `result` into `ret` as a Nix value, through `builtins.fromJSON`.
    fn give_back(&self, primop: &str, result: &Value, ret: *mut NixValue) -> Result<(), Refusal> {
        let text = CString::new(result.to_string())
            .map_err(|_| Refusal(format!("{primop}: its result holds a NUL byte")))?;
        let from_json = self.builtin(c"builtins.fromJSON")?;
        // SAFETY: a new string value of this state; `ret` is the primop's output.
        unsafe {
            let json = self.owned(nix_alloc_value(self.context, self.state), || {
                "cannot allocate a value".to_owned()
            })?;
            let status = nix_init_string(self.context, json.value, text.as_ptr());
            self.check(status, || format!("{primop}: returning its result"))?;
            let status = nix_value_call(self.context, self.state, from_json.value, json.value, ret);
            self.check(status, || format!("{primop}: returning its result"))
        }
    }
}
