// Nix 2.24 to 2.33 hand a primop callback their inner nix::EvalState where the C API wants its
// own `EvalState` wrapper, which holds that state after two settings objects
// (src/libexpr-c/nix_api_value.cc, nix_c_primop_wrapper; the wrapper's fields are in
// src/libexpr-c/nix_api_expr_internal.h, a header Nix does not install). Every C API call that
// takes the state then reads it at the wrong place. The plugin (src/ffi.rs) moves the pointer it
// receives back by the wrapper's offset of the state, computed here from Nix's own public
// headers, so the C API finds the state where it looks. Fixed upstream in Nix 2.34.1, where
// this file is not built.
#include <cstddef>

#include "fetch-settings.hh"
#include "eval-settings.hh"
#include "eval.hh"

namespace {
// The same members in the same order as the C API's `struct EvalState` of these versions.
struct CApiEvalStateLayout
{
    nix::fetchers::Settings fetchSettings;
    nix::EvalSettings settings;
    nix::EvalState state;
};
}

extern "C" std::size_t microvm_nix_eval_state_offset()
{
    return offsetof(CApiEvalStateLayout, state);
}
