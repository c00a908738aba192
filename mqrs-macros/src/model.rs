//! The `impl` block and its handlers as plain data: what was written, before any rule is applied.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, ImplItem, ImplItemFn, Item, ItemImpl, LitStr, Type};

/// An `#[rpc_module]` impl block.
pub struct Module {
    /// The impl block with the `#[rpc]` attributes removed.
    pub item: ItemImpl,
    /// The module's routing name.
    pub name: String,
    /// The type's own identifier, used to name the client (`LoginClient`).
    pub type_ident: Ident,
    /// Its handlers, in source order.
    pub handlers: Vec<Handler>,
    /// `#[rpc_module(lifecycle)]`: the user implements `Lifecycle` themselves.
    pub lifecycle: bool,
}

/// One `#[rpc]` method.
pub struct Handler {
    /// The method as written.
    pub func: ImplItemFn,
    /// The routing name (`#[rpc(name = ..)]` or the method name).
    pub name: String,
    /// The span of the `#[rpc]` attribute, for errors about the method as a whole.
    pub attr_span: Span,
}

/// Arguments of `#[rpc_module(..)]` or `#[rpc(..)]`.
#[derive(Default)]
struct Args {
    name: Option<LitStr>,
    lifecycle: bool,
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
        } else if meta.path.is_ident("lifecycle") && module {
            args.lifecycle = true;
            Ok(())
        } else if module {
            Err(meta.error(
                "unsupported #[rpc_module] argument; expected `name = \"...\"` or `lifecycle`",
            ))
        } else {
            Err(meta.error("unsupported #[rpc] argument; expected `name = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}

fn is_rpc_attr(a: &Attribute) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == "rpc")
}

impl Module {
    /// Reads the attribute arguments and the item.
    pub fn parse(attr: TokenStream, item: Item) -> syn::Result<Module> {
        let args = parse_args(attr, true)?;
        let Item::Impl(mut item) = item else {
            return Err(syn::Error::new(
                item.span(),
                "#[rpc_module] goes on an inherent `impl` block, e.g. `#[rpc_module] impl Login { .. }`",
            ));
        };
        let type_ident = match &*item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        }
        .ok_or_else(|| {
            syn::Error::new(
                item.self_ty.span(),
                "#[rpc_module] needs a named type, e.g. `impl Login`",
            )
        })?;
        let mut handlers = Vec::new();
        for it in &mut item.items {
            let ImplItem::Fn(f) = it else { continue };
            let Some(pos) = f.attrs.iter().position(is_rpc_attr) else {
                continue;
            };
            let attr = f.attrs[pos].clone();
            let rename = match &attr.meta {
                syn::Meta::Path(_) => None,
                syn::Meta::List(l) => parse_args(l.tokens.clone(), false)?.name,
                syn::Meta::NameValue(nv) => {
                    return Err(syn::Error::new(nv.span(), "use `#[rpc(name = \"...\")]`"))
                }
            };
            // Keep the attribute (so the user's `rpc` import stays used) but mark it as seen
            // by `#[rpc_module]`; the `rpc` macro then passes the method through unchanged.
            let path = attr.path().clone();
            f.attrs[pos] = syn::parse_quote!(#[#path(__mqrs_in_module)]);
            handlers.push(Handler {
                name: rename.map_or_else(|| f.sig.ident.to_string(), |l| l.value()),
                func: f.clone(),
                attr_span: attr.span(),
            });
        }
        Ok(Module {
            name: args
                .name
                .map_or_else(|| type_ident.to_string(), |l| l.value()),
            lifecycle: args.lifecycle,
            item,
            type_ident,
            handlers,
        })
    }
}

impl Handler {
    /// The typed arguments after the receiver.
    pub fn typed_args(&self) -> impl Iterator<Item = &syn::PatType> {
        self.func.sig.inputs.iter().filter_map(|a| match a {
            FnArg::Typed(t) => Some(t),
            FnArg::Receiver(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<Module> {
        Module::parse(attr, syn::parse2(item).expect("item parses"))
    }

    #[test]
    fn reads_names_renames_and_skips_plain_methods() {
        let m = parse(
            quote!(),
            quote! {
                impl crate::Login {
                    #[rpc] async fn track(&self, s: Session) -> Result<(), String> { Ok(()) }
                    #[mqrs_runtime::rpc(name = "HD_Login")] async fn login(&self, s: Session) -> Result<(), String> { Ok(()) }
                    fn helper(&self) {}
                }
            },
        )
        .expect("parses");
        assert_eq!(m.name, "Login");
        assert_eq!(m.type_ident, "Login");
        let names: Vec<&str> = m.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["track", "HD_Login"]);
        // The attributes stay, marked as handled, so the user's `rpc` import stays used.
        let marked = quote::ToTokens::to_token_stream(&m.item).to_string();
        assert_eq!(marked.matches("__mqrs_in_module").count(), 2, "{marked}");
    }

    #[test]
    fn module_name_argument() {
        let m = parse(quote!(name = "Chat2"), quote!(impl Chat {})).expect("parses");
        assert_eq!(m.name, "Chat2");
        let e = parse(quote!(title = "x"), quote!(impl Chat {}))
            .err()
            .expect("rejected");
        assert!(e.to_string().contains("expected `name"), "{e}");
        let e = parse(
            quote!(),
            quote!(
                struct Chat;
            ),
        )
        .err()
        .expect("rejected");
        assert!(e.to_string().contains("inherent `impl` block"), "{e}");
    }
}
