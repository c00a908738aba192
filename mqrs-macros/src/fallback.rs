//! What a module that failed validation expands to: the errors, the impl block as written, and
//! stand-ins for everything code using the module relies on (`impl RpcModule`, `impl Lifecycle`,
//! the client with the methods that can be written), so that the errors are the only ones.
//! The crate never compiles with these, so their bodies are `unreachable!()`.

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::{GenericParam, ReturnType, Type};

use crate::model::{Handler, Module};
use crate::validate::CLIENT_ITEMS;

/// Expands a module that failed validation with `error`.
pub fn module(m: &Module, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    let item = &m.item;
    let self_ty = &item.self_ty;
    let module_name = &m.name;
    // `for<'__mqrs>` defers the check of the supertraits' bounds to the code that uses the
    // module, so a module type that is not `Send + Sync` (or generic) adds no error here.
    let mut generics = item.generics.clone();
    generics
        .make_where_clause()
        .predicates
        .push(syn::parse_quote!(
            for<'__mqrs> #self_ty: ::core::marker::Send + ::core::marker::Sync + 'static
        ));
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    let lifecycle = if m.lifecycle {
        quote!()
    } else {
        quote! {
            impl #impl_generics ::mqrs_runtime::Lifecycle for #self_ty #where_clause {}
        }
    };
    let client = client(m);
    quote! {
        #error

        #item

        #lifecycle

        impl #impl_generics ::mqrs_runtime::RpcModule for #self_ty #where_clause {
            const NAME: &'static str = #module_name;
            const METHODS: &'static [&'static str] = &[];
        }

        #client
    }
}

/// True when `tokens` name one of `params` or `Self` (which in the client means the client).
fn mentions(tokens: TokenStream, params: &[Ident]) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "Self" || params.contains(&i),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

/// A handler's client method can be written when it is not generic, does not take the place
/// of one of the client's own items, and its types name no parameter of the impl block.
fn writable(m: &Module, h: &Handler, ok: &TokenStream) -> bool {
    let params: Vec<Ident> = m
        .item
        .generics
        .params
        .iter()
        .map(|p| match p {
            GenericParam::Type(t) => t.ident.clone(),
            GenericParam::Const(c) => c.ident.clone(),
            GenericParam::Lifetime(l) => l.lifetime.ident.clone(),
        })
        .collect();
    let name = h.func.sig.ident.unraw().to_string();
    h.func.sig.generics.params.is_empty()
        && !CLIENT_ITEMS.contains(&name.as_str())
        && !mentions(ok.clone(), &params)
        && !h
            .args
            .iter()
            .any(|a| mentions(a.ty.to_token_stream(), &params))
}

fn client(m: &Module) -> TokenStream {
    let client = format_ident!("{}Client", m.type_ident);
    let vis = &m.vis;
    let methods = m.handlers.iter().filter_map(|h| {
        // A return type that is not a `Result` most likely names the intended reply.
        let ok = match (&h.ok, &h.func.sig.output) {
            (Some(t), _) => quote!(#t),
            (None, ReturnType::Type(_, t)) if matches!(**t, Type::Path(_)) => quote!(#t),
            (None, _) => quote!(()),
        };
        if !writable(m, h, &ok) {
            return None;
        }
        let rust_fn = &h.func.sig.ident;
        let cfgs = &h.cfgs;
        let types = h.args.iter().map(|a| &a.ty);
        Some(quote! {
            #(#cfgs)*
            #[allow(non_snake_case)]
            #vis async fn #rust_fn(
                &self,
                _: &::mqrs_runtime::Session,
                #(_: #types),*
            ) -> ::std::result::Result<#ok, ::mqrs_runtime::RpcError> {
                ::core::unreachable!()
            }
        })
    });
    quote! {
        #[derive(Clone)]
        #vis struct #client {}

        impl #client {
            #vis fn new(_: &::mqrs_runtime::App) -> Self {
                ::core::unreachable!()
            }

            #(#methods)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fallback(item: TokenStream) -> String {
        let m = match Module::parse(quote!(), syn::parse2(item).expect("item")) {
            Ok(m) => m,
            Err(u) => panic!("refused: {}", u.error),
        };
        let e = crate::validate::check(&m).expect_err("invalid");
        module(&m, e).to_string()
    }

    #[test]
    fn stands_in_for_everything_generated() {
        let out = fallback(quote! {
            impl Login {
                #[rpc] async fn track(&self, s: Session, n: u8) -> Result<String, String> { todo!() }
                #[rpc] #[cfg(unix)] async fn bad(&self, n: u8) -> String { todo!() }
            }
        });
        assert!(out.starts_with(":: core :: compile_error !"), "{out}");
        assert!(out.contains("impl :: mqrs_runtime :: Lifecycle for Login"));
        assert!(out.contains("impl :: mqrs_runtime :: RpcModule for Login"));
        assert!(out.contains("pub struct LoginClient { }"));
        assert!(
            out.contains(
                "pub async fn track (& self , _ : & :: mqrs_runtime :: Session , _ : u8) \
             -> :: std :: result :: Result < String , :: mqrs_runtime :: RpcError >"
            ),
            "{out}"
        );
        // No session: all typed arguments are arguments; the written return type is the reply.
        assert!(out.contains(
            "# [cfg (unix)] # [allow (non_snake_case)] pub async fn bad (& self , _ : & :: mqrs_runtime :: Session , _ : u8) \
             -> :: std :: result :: Result < String , :: mqrs_runtime :: RpcError >"
        ), "{out}");
    }

    #[test]
    fn writes_only_the_methods_that_add_no_errors() {
        let out = fallback(quote! {
            impl<'a, T, const N: usize> Store<'a, T, N> {
                #[rpc] async fn count(&self, s: Session) -> Result<usize, String> { todo!() }
                #[rpc] async fn get(&self, s: Session) -> Result<Vec<T>, String> { todo!() }
                #[rpc] async fn put(&self, s: Session, t: [u8; N]) -> Result<(), String> { todo!() }
                #[rpc] async fn name(&self, s: Session) -> Result<&'a str, String> { todo!() }
                #[rpc] async fn me(&self, s: Session) -> Result<Self, String> { todo!() }
                #[rpc] async fn generic<U>(&self, s: Session) -> Result<(), String> { todo!() }
                #[rpc] async fn new(&self, s: Session) -> Result<(), String> { todo!() }
                #[rpc] async fn clone(&self, s: Session) -> Result<(), String> { todo!() }
            }
        });
        assert!(out.contains("impl < 'a , T , const N : usize > :: mqrs_runtime :: Lifecycle for Store < 'a , T , N > where for < '__mqrs > Store < 'a , T , N > :"), "{out}");
        let client = &out[out.find("struct StoreClient").expect("client")..];
        assert!(client.contains("async fn count"));
        for skipped in ["get", "put", "name", "me", "generic", "new", "clone"] {
            assert!(
                !client.contains(&format!("async fn {skipped}")),
                "{skipped}: {client}"
            );
        }
    }
}
