//! Code generation: the impl block as written, one dispatch shim and `inventory` registration
//! per handler, `impl RpcModule`, and the typed client. Names are spelled out so that
//! `cargo expand` reads like hand-written code.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, Pat, PathArguments, ReturnType, Type};

use crate::model::{Handler, Module};
use crate::validate::session_kind;

/// Expands a validated module.
pub fn module(m: &Module) -> TokenStream {
    let item = &m.item;
    let self_ty = &item.self_ty;
    let module_name = &m.name;
    let method_names: Vec<&String> = m.handlers.iter().map(|h| &h.name).collect();
    let shims = m.handlers.iter().map(|h| shim(m, h));
    let client = client(m);
    let doc =
        format!(" mqrs: `{module_name}` is an RPC module with the handlers listed in `METHODS`.");
    let lifecycle = if m.lifecycle {
        quote!()
    } else {
        quote! {
            /// mqrs: no start or stop hooks (use `#[rpc_module(lifecycle)]` to write your own).
            impl ::mqrs_runtime::Lifecycle for #self_ty {}
        }
    };
    quote! {
        #item

        #lifecycle

        #[doc = #doc]
        impl ::mqrs_runtime::rpc::RpcModule for #self_ty {
            const NAME: &'static str = #module_name;
            const METHODS: &'static [&'static str] = &[#(#method_names),*];
        }

        #(#shims)*

        #client
    }
}

/// The argument names used in generated code: the user's where plain, `argN` otherwise.
fn arg_idents(h: &Handler) -> Vec<(Ident, &Type)> {
    h.typed_args()
        .skip(1)
        .enumerate()
        .map(|(i, a)| {
            let ident = match &*a.pat {
                Pat::Ident(p) => Ident::new(&p.ident.to_string(), Span::call_site()),
                _ => format_ident!("arg{}", i),
            };
            (ident, &*a.ty)
        })
        .collect()
}

fn shim(m: &Module, h: &Handler) -> TokenStream {
    let self_ty = &m.item.self_ty;
    let module_name = &m.name;
    let method_name = &h.name;
    let full = format!("{module_name}/{method_name}");
    let rust_fn = &h.func.sig.ident;
    let shim_fn = format_ident!("__mqrs_dispatch_{}_{}", m.type_ident, rust_fn);
    let args = arg_idents(h);
    let names: Vec<&Ident> = args.iter().map(|(i, _)| i).collect();
    let types: Vec<&Type> = args.iter().map(|(_, t)| *t).collect();
    let decode = if args.is_empty() {
        quote! { ::mqrs_runtime::rpc::decode_no_args(#full, &args)?; }
    } else {
        quote! {
            let (#(#names,)*): (#(#types,)*) = ::mqrs_runtime::rpc::decode_args(#full, &args)?;
        }
    };
    let by_ref = h
        .typed_args()
        .next()
        .and_then(|a| session_kind(&a.ty))
        .unwrap_or(false);
    let session_arg = if by_ref {
        quote!(&session)
    } else {
        quote!(session)
    };
    let output_span = match &h.func.sig.output {
        ReturnType::Type(_, t) => t.span(),
        ReturnType::Default => h.func.sig.span(),
    };
    let reply = quote_spanned! {output_span=>
        ::mqrs_runtime::rpc::IntoReply::into_reply(result, #full)
    };
    let doc = format!(" mqrs: dispatch shim for `{full}`: decodes the arguments, runs the handler, encodes its reply.");
    quote! {
        #[doc = #doc]
        #[allow(non_snake_case)]
        fn #shim_fn(
            module: ::mqrs_runtime::rpc::ModuleRef,
            session: ::mqrs_runtime::Session,
            args: ::std::vec::Vec<u8>,
        ) -> ::mqrs_runtime::rpc::HandlerFuture {
            ::std::boxed::Box::pin(async move {
                let this = ::mqrs_runtime::rpc::downcast::<#self_ty>(module, #full)?;
                #decode
                let result = this.#rust_fn(#session_arg, #(#names),*).await;
                #reply
            })
        }

        ::mqrs_runtime::__private::inventory::submit! {
            ::mqrs_runtime::rpc::RpcMethod {
                module: #module_name,
                method: #method_name,
                type_id: ::std::any::TypeId::of::<#self_ty>,
                invoke: #shim_fn,
            }
        }
    }
}

/// `T` of a return type spelled `Result<T, E>`, else the `IntoReply::Ok` projection.
fn ok_type(output: &ReturnType) -> TokenStream {
    let ReturnType::Type(_, ty) = output else {
        return quote!(());
    };
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(a) = &last.arguments {
                    if let Some(GenericArgument::Type(t)) = a.args.first() {
                        return quote!(#t);
                    }
                }
            }
        }
    }
    quote_spanned!(ty.span()=> <#ty as ::mqrs_runtime::rpc::IntoReply>::Ok)
}

fn client(m: &Module) -> TokenStream {
    let client = format_ident!("{}Client", m.type_ident);
    let module_name = &m.name;
    let vis = quote!(pub);
    let methods = m.handlers.iter().map(|h| {
        let rust_fn = &h.func.sig.ident;
        let method_name = &h.name;
        let args = arg_idents(h);
        let params = args.iter().map(|(i, t)| quote!(#i: #t));
        let names: Vec<&Ident> = args.iter().map(|(i, _)| i).collect();
        let ok = ok_type(&h.func.sig.output);
        // Spanned on the handler's return type, so a type that is not a `Result` is reported there.
        let ret_span = match &h.func.sig.output {
            ReturnType::Type(_, t) => t.span(),
            ReturnType::Default => Span::call_site(),
        };
        let ret = quote_spanned!(ret_span=> ::std::result::Result<#ok, ::mqrs_runtime::RpcError>);
        let ok_bound = quote_spanned!(ret_span=>
            for<'__mqrs> #ok: ::mqrs_runtime::__private::serde::de::DeserializeOwned
        );
        let user_docs: Vec<&syn::Attribute> = h
            .func
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .collect();
        let doc = format!(" Calls `{module_name}/{method_name}`.");
        let arg_types = args.iter().map(|(_, t)| t);
        // Higher-ranked bounds are checked where the method is called, not here: a handler whose
        // argument is only `Deserialize` still compiles; only calling its client needs `Serialize`.
        quote! {
            #[doc = #doc]
            #[doc = ""]
            #(#user_docs)*
            #[allow(non_snake_case)]
            pub async fn #rust_fn(
                &self,
                session: &::mqrs_runtime::Session,
                #(#params),*
            ) -> #ret
            where
                #(for<'__mqrs> #arg_types: ::mqrs_runtime::__private::serde::Serialize,)*
                #ok_bound
            {
                self.app.call(#module_name, #method_name, session, (#(#names,)*)).await
            }
        }
    });
    let doc = format!(
        " Typed client for the `{module_name}` module: one async method per `#[rpc]` handler."
    );
    quote! {
        #[doc = #doc]
        #[derive(Clone)]
        #vis struct #client {
            app: ::mqrs_runtime::App,
        }

        impl #client {
            /// A client that calls through `app`.
            pub fn new(app: &::mqrs_runtime::App) -> Self {
                Self { app: app.clone() }
            }

            #(#methods)*
        }
    }
}
