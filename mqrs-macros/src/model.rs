//! The `impl` block and its handlers as plain data: what was written, and the facts every later
//! phase needs (session passing, arguments, reply type, cfgs), computed once, before any rule is
//! applied.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, Item, ItemImpl, LitStr, Meta,
    MetaList, Pat, PatType, PathArguments, ReturnType, Token, Type, Visibility,
};

/// An `#[rpc_module]` impl block.
pub struct Module {
    /// The impl block with the `#[rpc]` attributes made inert.
    pub item: ItemImpl,
    /// The module's routing name.
    pub name: String,
    /// The type's own identifier, used to name the client (`LoginClient`).
    pub type_ident: Ident,
    /// Visibility of the client, its `new` and its methods (`vis = ..`, default `pub`).
    pub vis: Visibility,
    /// Its handlers, in source order.
    pub handlers: Vec<Handler>,
    /// `#[rpc_module(lifecycle)]`: the user implements `Lifecycle` themselves.
    pub lifecycle: bool,
    /// Malformed `#[rpc_module(..)]` or `#[rpc(..)]` arguments, read past with the defaults.
    pub errors: Vec<syn::Error>,
}

/// One `#[rpc]` method.
pub struct Handler {
    /// The method as written.
    pub func: ImplItemFn,
    /// The routing name (`#[rpc(name = ..)]` or the method name).
    pub name: String,
    /// The span of the `#[rpc]` attribute, for errors about the method as a whole.
    pub attr_span: Span,
    /// The first typed argument when its type is a `Session` in some form.
    pub session: Option<SessionArg>,
    /// The arguments after the session (all typed arguments when there is none).
    pub args: Vec<Arg>,
    /// The reply type of a successful call; `None` when the return type cannot be a `Result`.
    pub ok: Option<Type>,
    /// `#[cfg]`s of the method, and `#[cfg_attr]`s reduced to the `cfg`s they add.
    pub cfgs: Vec<Attribute>,
    /// `#[rpc(idempotent)]`: safe to run twice, so a failed call may be retried elsewhere.
    pub idempotent: bool,
}

/// How a handler takes the caller's `Session`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// `session: Session`.
    Value,
    /// `session: &Session`.
    Ref,
    /// `session: &mut Session` (refused: a call's session is not shared back).
    RefMut,
}

/// The session argument as written.
pub struct SessionArg {
    /// By value, by reference, or (refused) by `&mut`.
    pub kind: SessionKind,
    /// Its pattern, e.g. `mut session`.
    pub pat: Pat,
}

/// A decoded argument of a handler.
pub struct Arg {
    /// The name generated code uses: the user's where it is a plain name, `argN` otherwise.
    pub ident: Ident,
    /// The pattern as written.
    pub pat: Pat,
    /// The type as written.
    pub ty: Type,
}

/// An item `#[rpc_module]` cannot build a module from: the error, and the item to emit again
/// (its `#[rpc]` marks made inert) so that the error stays the only one.
pub struct Unusable {
    /// Why.
    pub error: syn::Error,
    /// The item, to emit after the error.
    pub item: TokenStream,
}

/// Arguments of `#[rpc_module(..)]` or `#[rpc(..)]`.
#[derive(Default)]
struct Args {
    name: Option<LitStr>,
    lifecycle: bool,
    vis: Option<Visibility>,
    idempotent: bool,
}

fn parse_args(tokens: TokenStream, module: bool) -> syn::Result<Args> {
    let mut args = Args::default();
    if tokens.is_empty() {
        return Ok(args);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("__mqrs_in_module") && !module {
            Ok(())
        } else if meta.path.is_ident("name") {
            args.name = Some(meta.value()?.parse::<LitStr>()?);
            Ok(())
        } else if meta.path.is_ident("idempotent") && !module {
            args.idempotent = true;
            Ok(())
        } else if meta.path.is_ident("lifecycle") && module {
            args.lifecycle = true;
            Ok(())
        } else if meta.path.is_ident("vis") && module {
            args.vis = Some(parse_vis(meta.value()?)?);
            Ok(())
        } else if module {
            Err(meta.error(
                "unsupported #[rpc_module] argument; expected `name = \"...\"`, `lifecycle` or `vis = pub(crate)`",
            ))
        } else {
            Err(meta
                .error("unsupported #[rpc] argument; expected `name = \"...\"` or `idempotent`"))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}

/// A visibility written out in full: `pub`, `pub(crate)`, `pub(super)`, `pub(self)`, `pub(in ..)`.
fn parse_vis(input: ParseStream) -> syn::Result<Visibility> {
    const EXPECTED: &str =
        "expected a visibility: `pub`, `pub(crate)`, `pub(super)`, `pub(self)` or `pub(in path)`";
    let vis: Visibility = input.parse()?;
    if matches!(vis, Visibility::Inherited) || !(input.is_empty() || input.peek(Token![,])) {
        return Err(input.error(EXPECTED));
    }
    Ok(vis)
}

fn is_rpc_attr(a: &Attribute) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == "rpc")
}

impl Module {
    /// Reads the attribute arguments and the item. Malformed arguments are kept in `errors`;
    /// only an item with no named type to build on is refused outright.
    pub fn parse(attr: TokenStream, item: Item) -> Result<Module, Unusable> {
        let Item::Impl(mut item) = item else {
            return Err(Unusable {
                error: syn::Error::new(
                    item.span(),
                    "#[rpc_module] goes on an inherent `impl` block, e.g. `#[rpc_module] impl Login { .. }`",
                ),
                item: item.into_token_stream(),
            });
        };
        let mut errors = Vec::new();
        let args = parse_args(attr, true).unwrap_or_else(|e| {
            errors.push(e);
            Args::default()
        });
        let handlers = take_handlers(&mut item, &mut errors);
        let type_ident = match &*item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        };
        let Some(type_ident) = type_ident else {
            return Err(Unusable {
                error: syn::Error::new(
                    item.self_ty.span(),
                    "#[rpc_module] needs a named type, e.g. `impl Login`",
                ),
                item: item.into_token_stream(),
            });
        };
        Ok(Module {
            name: args
                .name
                .map_or_else(|| type_ident.unraw().to_string(), |l| l.value()),
            vis: args.vis.unwrap_or_else(|| syn::parse_quote!(pub)),
            lifecycle: args.lifecycle,
            item,
            type_ident,
            handlers,
            errors,
        })
    }
}

/// Reads the `#[rpc]` methods of `item` and makes their marks inert: the attribute stays (so the
/// user's `rpc` import stays used), marked as seen, and the `rpc` macro passes the method through.
fn take_handlers(item: &mut ItemImpl, errors: &mut Vec<syn::Error>) -> Vec<Handler> {
    let mut handlers = Vec::new();
    for it in &mut item.items {
        let ImplItem::Fn(f) = it else { continue };
        let Some(pos) = f.attrs.iter().position(is_rpc_attr) else {
            continue;
        };
        let attr = f.attrs[pos].clone();
        let args = match &attr.meta {
            syn::Meta::Path(_) => Args::default(),
            syn::Meta::List(l) => parse_args(l.tokens.clone(), false).unwrap_or_else(|e| {
                errors.push(e);
                Args::default()
            }),
            syn::Meta::NameValue(nv) => {
                errors.push(syn::Error::new(nv.span(), "use `#[rpc(name = \"...\")]`"));
                Args::default()
            }
        };
        let path = attr.path().clone();
        f.attrs[pos] = syn::parse_quote!(#[#path(__mqrs_in_module)]);
        let mut handler = Handler::read(f.clone(), args.name, attr.span());
        handler.idempotent = args.idempotent;
        handlers.push(handler);
    }
    handlers
}

impl Handler {
    fn read(func: ImplItemFn, rename: Option<LitStr>, attr_span: Span) -> Handler {
        let mut typed: Vec<&PatType> = func
            .sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                FnArg::Typed(t) => Some(t),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let session = typed.first().and_then(|first| {
            Some(SessionArg {
                kind: session_kind(&first.ty)?,
                pat: (*first.pat).clone(),
            })
        });
        if session.is_some() {
            typed.remove(0);
        }
        Handler {
            name: rename.map_or_else(|| func.sig.ident.unraw().to_string(), |l| l.value()),
            attr_span,
            session,
            args: args(&typed),
            ok: ok_type(&func.sig.output),
            cfgs: cfg_attrs(&func.attrs),
            idempotent: false,
            func,
        }
    }
}

/// True when `ty` names `Session` (any path ending in `Session`, no generics).
fn is_session(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path.segments.last().is_some_and(|s| {
                    s.ident == "Session" && matches!(s.arguments, PathArguments::None)
                })
        }
        Type::Group(g) => is_session(&g.elem),
        _ => false,
    }
}

fn session_kind(ty: &Type) -> Option<SessionKind> {
    match ty {
        Type::Reference(r) if is_session(&r.elem) => Some(match r.mutability {
            None => SessionKind::Ref,
            Some(_) => SessionKind::RefMut,
        }),
        t if is_session(t) => Some(SessionKind::Value),
        _ => None,
    }
}

/// Names that generated code binds itself next to the arguments (the shim's `session` and
/// `this`, the client's `session` parameter): an argument so named is renamed there.
const TAKEN: [&str; 2] = ["session", "this"];

fn args(typed: &[&PatType]) -> Vec<Arg> {
    let plain = |pat: &Pat| match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(p.ident.clone()),
        _ => None,
    };
    let user: Vec<String> = typed
        .iter()
        .filter_map(|a| plain(&a.pat))
        .map(|i| i.unraw().to_string())
        .collect();
    typed
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ident = match plain(&a.pat) {
                Some(mut id) if !TAKEN.contains(&id.unraw().to_string().as_str()) => {
                    id.set_span(Span::call_site());
                    id
                }
                _ => {
                    let mut name = format!("arg{i}");
                    while user.contains(&name) {
                        name.insert(0, '_');
                    }
                    Ident::new(&name, Span::call_site())
                }
            };
            Arg {
                ident,
                pat: (*a.pat).clone(),
                ty: (*a.ty).clone(),
            }
        })
        .collect()
}

/// `T` of a return type spelled `Result<T, E>`; `<R as IntoReply>::Ok` for any other type that
/// may be a `Result` alias; `None` for no return type or one that cannot be a `Result`.
fn ok_type(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(a) = &last.arguments {
                    if let Some(GenericArgument::Type(t)) = a.args.first() {
                        return Some(t.clone());
                    }
                }
            }
        }
    }
    if plainly_not_result(ty) {
        return None;
    }
    Some(
        syn::parse_quote_spanned!(ty.span()=> <#ty as ::mqrs_runtime::__private_0_1::IntoReply>::Ok),
    )
}

/// True for return types that cannot be a `Result` alias: tuples, references, arrays, slices,
/// and paths with neither generic arguments nor `Result` in their name.
fn plainly_not_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| {
            matches!(s.arguments, PathArguments::None) && !s.ident.to_string().contains("Result")
        }),
        Type::Tuple(_) | Type::Reference(_) | Type::Array(_) | Type::Slice(_) => true,
        _ => false,
    }
}

/// The method's `#[cfg]`s, and each `#[cfg_attr(pred, ..)]` reduced to the `cfg`s it would add.
fn cfg_attrs(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter_map(|a| match &a.meta {
            Meta::List(l) if l.path.is_ident("cfg") => Some(a.clone()),
            Meta::List(l) if l.path.is_ident("cfg_attr") => Some(Attribute {
                meta: conditional_cfg(l)?,
                ..a.clone()
            }),
            _ => None,
        })
        .collect()
}

/// `cfg_attr(pred, a, b, ..)` keeping only the `cfg(..)`s (and nested `cfg_attr`s holding one)
/// among `a, b, ..`; `None` when none is left.
fn conditional_cfg(list: &MetaList) -> Option<Meta> {
    let (pred, attrs) = list
        .parse_args_with(|input: ParseStream| {
            let pred: Meta = input.parse()?;
            input.parse::<Token![,]>()?;
            Ok((
                pred,
                Punctuated::<Meta, Token![,]>::parse_terminated(input)?,
            ))
        })
        .ok()?;
    let kept: Vec<Meta> = attrs
        .into_iter()
        .filter_map(|m| match m {
            Meta::List(l) if l.path.is_ident("cfg") => Some(Meta::List(l)),
            Meta::List(l) if l.path.is_ident("cfg_attr") => conditional_cfg(&l),
            _ => None,
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    let path = &list.path;
    Some(syn::parse_quote!(#path(#pred, #(#kept),*)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(attr: TokenStream, item: TokenStream) -> Module {
        match Module::parse(attr, syn::parse2(item).expect("item parses")) {
            Ok(m) => m,
            Err(u) => panic!("refused: {}", u.error),
        }
    }

    fn handler(sig: TokenStream) -> Handler {
        let mut m = parse(quote!(), quote!(impl M { #[rpc] #sig { Ok(()) } }));
        m.handlers.remove(0)
    }

    fn tokens(t: &impl ToTokens) -> String {
        t.to_token_stream().to_string()
    }

    #[test]
    fn reads_names_renames_and_skips_plain_methods() {
        let m = parse(
            quote!(),
            quote! {
                impl crate::Login {
                    #[rpc] async fn track(&self, s: Session) -> Result<(), String> { Ok(()) }
                    #[mqrs_runtime::rpc(name = "HD_Login")] async fn login(&self, s: Session) -> Result<(), String> { Ok(()) }
                    #[rpc] async fn r#type(&self, s: Session) -> Result<(), String> { Ok(()) }
                    fn helper(&self) {}
                }
            },
        );
        assert_eq!(m.name, "Login");
        assert_eq!(m.type_ident, "Login");
        assert!(m.errors.is_empty());
        let names: Vec<&str> = m.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["track", "HD_Login", "type"]);
        // The attributes stay, marked as handled, so the user's `rpc` import stays used.
        let marked = tokens(&m.item);
        assert_eq!(marked.matches("__mqrs_in_module").count(), 3, "{marked}");
    }

    #[test]
    fn module_arguments() {
        let m = parse(quote!(name = "Chat2", lifecycle), quote!(impl Chat {}));
        assert_eq!(m.name, "Chat2");
        assert!(m.lifecycle);
        assert_eq!(tokens(&m.vis), "pub");
        let m = parse(quote!(title = "x"), quote!(impl Chat {}));
        assert!(
            m.errors[0].to_string().contains("expected `name"),
            "{}",
            m.errors[0]
        );
        assert_eq!(m.name, "Chat", "read past with the defaults");
        let refused = Module::parse(
            quote!(),
            syn::parse_quote!(
                struct Chat;
            ),
        )
        .err()
        .expect("refused");
        assert!(refused.error.to_string().contains("inherent `impl` block"));
        assert_eq!(refused.item.to_string(), "struct Chat ;");
    }

    #[test]
    fn vis_argument() {
        for vis in [
            "pub",
            "pub(crate)",
            "pub(super)",
            "pub(self)",
            "pub(in crate::a)",
        ] {
            let attr: TokenStream = format!("vis = {vis}, name = \"X\"").parse().unwrap();
            let m = parse(attr, quote!(impl Chat {}));
            assert!(m.errors.is_empty(), "{vis}: {}", m.errors[0]);
            let written: TokenStream = vis.parse().unwrap();
            assert_eq!(tokens(&m.vis), written.to_string());
            assert_eq!(m.name, "X");
        }
        for bad in ["crate", "", "pub(foo)", "\"pub\""] {
            let attr: TokenStream = format!("vis = {bad}").parse().unwrap();
            let m = parse(attr, quote!(impl Chat {}));
            assert!(
                m.errors[0]
                    .to_string()
                    .contains("expected a visibility: `pub`, `pub(crate)`"),
                "{bad}: {}",
                m.errors[0]
            );
        }
    }

    #[test]
    fn unnamed_type_keeps_the_block_with_inert_marks() {
        let refused = Module::parse(
            quote!(),
            syn::parse_quote!(impl [u8] { #[rpc] async fn f(&self) {} }),
        )
        .err()
        .expect("refused");
        assert!(refused.error.to_string().contains("named type"));
        assert!(refused.item.to_string().contains("__mqrs_in_module"));
    }

    #[test]
    fn session_arguments_and_reply_type() {
        let h = handler(quote!(async fn a(&self, mut s: Session, x: i32) -> Result<u8, String>));
        assert_eq!(h.session.as_ref().map(|s| s.kind), Some(SessionKind::Value));
        assert_eq!(tokens(&h.session.unwrap().pat), "mut s");
        assert_eq!(h.args.len(), 1);
        assert_eq!(tokens(&h.ok), "u8");

        let h = handler(quote!(async fn b(&self, s: &mqrs_runtime::Session) -> Reply<u8>));
        assert_eq!(h.session.map(|s| s.kind), Some(SessionKind::Ref));
        assert_eq!(
            tokens(&h.ok),
            "< Reply < u8 > as :: mqrs_runtime :: __private_0_1 :: IntoReply > :: Ok"
        );

        let h = handler(quote!(async fn c(&self, s: &mut Session) -> String));
        assert_eq!(h.session.map(|s| s.kind), Some(SessionKind::RefMut));
        assert!(h.ok.is_none());

        // No session: every typed argument stays an argument.
        let h = handler(quote!(async fn d(&self, name: String)));
        assert!(h.session.is_none());
        assert_eq!(tokens(&h.args[0].ty), "String");
        assert!(h.ok.is_none());
    }

    #[test]
    fn argument_names_for_generated_code() {
        let h = handler(quote!(
            async fn a(&self, s: Session, mut b: u8, _: u8, arg2: u8, (x, y): (u8, u8), session: u8, r#type: u8, this: u8) -> Result<(), E>
        ));
        let names: Vec<String> = h.args.iter().map(|a| a.ident.to_string()).collect();
        assert_eq!(
            names,
            ["b", "arg1", "arg2", "arg3", "arg4", "r#type", "arg6"],
            "plain names kept; `_`, patterns and names generated code binds are renamed"
        );
        let h = handler(quote!(async fn a(&self, s: Session, _: u8, arg0: u8) -> Result<(), E>));
        let names: Vec<String> = h.args.iter().map(|a| a.ident.to_string()).collect();
        assert_eq!(
            names,
            ["_arg0", "arg0"],
            "a generated name never takes a user's"
        );
    }

    #[test]
    fn cfgs_and_cfg_attrs() {
        let h = handler(quote!(
            #[doc = "x"]
            #[cfg(feature = "a")]
            #[cfg_attr(test, allow(dead_code), cfg(unix))]
            #[cfg_attr(test, inline)]
            #[cfg_attr(all(), cfg_attr(unix, cfg(any()), must_use))]
            async fn a(&self, s: Session) -> Result<(), E>
        ));
        let cfgs: Vec<String> = h.cfgs.iter().map(tokens).collect();
        assert_eq!(
            cfgs,
            [
                "# [cfg (feature = \"a\")]",
                "# [cfg_attr (test , cfg (unix))]",
                "# [cfg_attr (all () , cfg_attr (unix , cfg (any ())))]",
            ]
        );
    }
}
