//! `#[remote]`: parse the attribute and the function, check that the
//! signature can cross a process boundary, and generate the stub, the local
//! function and the registration.
//!
//! Every problem found is reported at once, each on its own span; on error
//! the original function is emitted unchanged next to the errors so IDEs
//! keep working.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, Pat, PathArguments, ReturnType, Type};

/// Options given in `#[remote(...)]`.
struct Options {
    gpu: bool,
    cpus: u32,
    gpus: Option<u32>,
    memory_mb: u64,
    /// Custom resources: name and amount, each name once.
    resources: Vec<(String, u32)>,
    retries: u32,
    cost: Option<f64>,
    timeout_ms: u32,
    retry_on_error: bool,
    /// The registered name, when given (`name = "..."`).
    name: Option<syn::LitStr>,
    krate: syn::Path,
}

/// A checked remote function.
struct Remote {
    item: ItemFn,
    opts: Options,
    args: Vec<(syn::Ident, Type)>,
    /// The type the `DistFuture` yields.
    output: Type,
    /// Whether the function returns `Result<output, E>`.
    fallible: bool,
}

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item_fn: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let mut e = e;
            e.combine(syn::Error::new(
                Span::call_site(),
                "#[dfut::remote] applies to free functions (`fn` or `async fn`)",
            ));
            let errors = e.to_compile_error();
            return quote! { #item #errors };
        }
    };
    match parse(attr, item_fn.clone()) {
        Ok(remote) => generate(&remote),
        Err(e) => {
            let errors = e.to_compile_error();
            quote! { #item_fn #errors }
        }
    }
}

fn push(errors: &mut Option<syn::Error>, e: syn::Error) {
    match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    }
}

fn parse_options(attr: TokenStream, errors: &mut Option<syn::Error>) -> Options {
    let mut opts = Options {
        gpu: false,
        cpus: 1,
        gpus: None,
        memory_mb: 0,
        resources: Vec::new(),
        retries: 0,
        cost: None,
        timeout_ms: 0,
        retry_on_error: false,
        name: None,
        krate: syn::parse_quote!(::dfut),
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("gpu") {
            opts.gpu = true;
            Ok(())
        } else if meta.path.is_ident("cpus") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            let cpus: u32 = lit.base10_parse()?;
            if cpus == 0 {
                return Err(meta.error("`cpus` must be at least 1: a task holds a slot"));
            }
            opts.cpus = cpus;
            Ok(())
        } else if meta.path.is_ident("gpus") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            opts.gpus = Some(lit.base10_parse()?);
            Ok(())
        } else if meta.path.is_ident("memory_mb") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            opts.memory_mb = lit.base10_parse()?;
            Ok(())
        } else if meta.path.is_ident("resources") {
            meta.parse_nested_meta(|inner| {
                let Some(ident) = inner.path.get_ident() else {
                    return Err(inner.error("a resource is named by one identifier: `disk = 1`"));
                };
                let name = ident.to_string();
                let lit: syn::LitInt = inner.value()?.parse()?;
                let amount: u32 = lit.base10_parse()?;
                if opts.resources.iter().any(|(n, _)| *n == name) {
                    return Err(inner.error(format!("resource `{name}` is named twice")));
                }
                opts.resources.push((name, amount));
                Ok(())
            })
        } else if meta.path.is_ident("retries") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            opts.retries = lit.base10_parse()?;
            Ok(())
        } else if meta.path.is_ident("cost") {
            let value = meta.value()?;
            let cost: f64 = if value.peek(syn::LitFloat) {
                value.parse::<syn::LitFloat>()?.base10_parse()?
            } else {
                value.parse::<syn::LitInt>()?.base10_parse()?
            };
            if !(cost.is_finite() && cost > 0.0) {
                return Err(meta.error("`cost` must be a positive number"));
            }
            opts.cost = Some(cost);
            Ok(())
        } else if meta.path.is_ident("timeout_ms") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            let ms: u32 = lit.base10_parse()?;
            if ms == 0 {
                return Err(
                    meta.error("`timeout_ms` must be at least 1; leave it out for no deadline")
                );
            }
            opts.timeout_ms = ms;
            Ok(())
        } else if meta.path.is_ident("retry_on_error") {
            opts.retry_on_error = true;
            Ok(())
        } else if meta.path.is_ident("name") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            if lit.value().trim().is_empty() {
                return Err(meta.error("`name` must not be empty"));
            }
            opts.name = Some(lit);
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            opts.krate = lit.parse()?;
            Ok(())
        } else {
            Err(meta.error(
                "unknown option; expected `gpu`, `gpus = N`, `cpus = N`, `memory_mb = N`, \
                 `resources(name = N, ..)`, `retries = N`, `retry_on_error`, \
                 `timeout_ms = N`, `cost = X`, `name = \"...\"` or `crate = \"path\"`",
            ))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        push(errors, e);
    }
    opts
}

fn parse(attr: TokenStream, item: ItemFn) -> syn::Result<Remote> {
    let mut errors = None;
    let opts = parse_options(attr, &mut errors);
    let sig = &item.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        push(
            &mut errors,
            syn::Error::new_spanned(
                &sig.generics,
                "remote functions cannot be generic: a worker must know the concrete types to decode arguments",
            ),
        );
    }
    if let Some(c) = &sig.constness {
        push(
            &mut errors,
            syn::Error::new(c.span, "remote functions cannot be `const`"),
        );
    }
    if let Some(u) = &sig.unsafety {
        push(
            &mut errors,
            syn::Error::new(u.span, "remote functions cannot be `unsafe`"),
        );
    }
    if let Some(abi) = &sig.abi {
        push(
            &mut errors,
            syn::Error::new_spanned(abi, "remote functions cannot declare an ABI"),
        );
    }
    if let Some(v) = &sig.variadic {
        push(
            &mut errors,
            syn::Error::new_spanned(v, "remote functions cannot be variadic"),
        );
    }
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => push(
                &mut errors,
                syn::Error::new_spanned(
                    r,
                    "remote functions cannot take `self`: make it a free function and pass the value as an argument",
                ),
            ),
            FnArg::Typed(pt) => {
                if let Some(e) = owned_type_error(&pt.ty, "argument") {
                    push(&mut errors, e);
                }
                let name = match &*pt.pat {
                    Pat::Ident(p) => p.ident.clone(),
                    _ => format_ident!("__dfut_arg{}", i),
                };
                args.push((name, (*pt.ty).clone()));
            }
        }
    }
    let (output, fallible) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => {
            if let Some(e) = owned_type_error(ty, "return") {
                push(&mut errors, e);
            }
            match result_ok_type(ty) {
                Some(ok) => (ok, true),
                None => ((**ty).clone(), false),
            }
        }
    };
    match errors {
        Some(e) => Err(e),
        None => Ok(Remote {
            item,
            opts,
            args,
            output,
            fallible,
        }),
    }
}

/// Why `ty` cannot be sent to another process, if it cannot.
fn owned_type_error(ty: &Type, what: &str) -> Option<syn::Error> {
    match ty {
        Type::Reference(r) => Some(syn::Error::new_spanned(
            r,
            format!(
                "remote function {what} types must be owned: the value is sent to another process; \
                 use an owned type (e.g. `String` for `&str`, `Vec<T>` for `&[T]`)"
            ),
        )),
        Type::ImplTrait(t) => Some(syn::Error::new_spanned(
            t,
            format!("remote function {what} types must be concrete, not `impl Trait`"),
        )),
        Type::Ptr(p) => Some(syn::Error::new_spanned(
            p,
            format!("remote function {what} types cannot be raw pointers"),
        )),
        Type::TraitObject(t) => Some(syn::Error::new_spanned(
            t,
            format!("remote function {what} types cannot be trait objects"),
        )),
        Type::Paren(p) => owned_type_error(&p.elem, what),
        _ => None,
    }
}

/// `T` for a parameter type spelled `Many<T>` (any path ending in `Many`,
/// such as `dfut::Many<T>`): such parameters take a list.
fn many_inner(ty: &Type) -> Option<&Type> {
    wrapper_inner(ty, "Many")
}

/// `T` for a type spelled `<wrapper><T>` (any path ending in `wrapper`).
fn wrapper_inner<'t>(ty: &'t Type, wrapper: &str) -> Option<&'t Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

/// `T` for a return type spelled `Result<T, ..>` (any path ending in
/// `Result`, such as `std::io::Result<T>` or `anyhow::Result<T>`).
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn generate(r: &Remote) -> TokenStream {
    let krate = &r.opts.krate;
    let item = &r.item;
    let vis = &item.vis;
    let name = &item.sig.ident;
    let name_str = name.to_string();
    let local = format_ident!("{}_local", name);
    let output = &r.output;
    let docs: Vec<_> = item
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let is_async = item.sig.asyncness.is_some();

    let mut local_fn = item.clone();
    local_fn.sig.ident = local.clone();
    let local_doc = format!(
        "Runs [`{name_str}`] here, in this thread, as a plain function call \
         (generated by `#[dfut::remote]`)."
    );

    let arg_names: Vec<_> = r.args.iter().map(|(n, _)| n).collect();
    let arg_types: Vec<_> = r.args.iter().map(|(_, t)| t).collect();
    let indices: Vec<_> = (0..r.args.len()).collect();
    let decoded: Vec<_> = (0..r.args.len())
        .map(|i| format_ident!("__dfut_a{}", i))
        .collect();

    let stub_doc = format!(
        "Remote call (generated by `#[dfut::remote]`): returns a [`DistFuture`]({krate}::DistFuture) \
         at once and runs on a worker. Each argument takes a value or a `DistFuture` of its type. \
         The plain function is [`{local}`].",
        krate = quote!(#krate).to_string().replace(' ', ""),
    );

    let checks = arg_types.iter().map(|ty| {
        let checked = many_inner(ty)
            .or_else(|| wrapper_inner(ty, "Archived"))
            .unwrap_or(ty);
        quote_spanned! {ty.span()=> #krate::__private::assert_data::<#checked>(); }
    });
    let output_check = {
        let span = match &item.sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => item.sig.ident.span(),
        };
        quote_spanned! {span=> #krate::__private::assert_data::<#output>(); }
    };

    let call = if is_async {
        quote! { #local(#(#decoded),*).await }
    } else {
        quote! { #local(#(#decoded),*) }
    };
    let encode = if r.fallible {
        quote! {
            match #call {
                ::core::result::Result::Ok(__dfut_value) => {
                    #krate::__private::ret::<#output>(&__dfut_value)
                }
                ::core::result::Result::Err(__dfut_error) => {
                    #[allow(unused_imports)]
                    use #krate::__private::{DisplayOnly as _, ErrorChain as _};
                    let __dfut_error = #krate::__private::displayable(__dfut_error);
                    ::core::result::Result::Err(
                        (&&#krate::__private::Returned(&__dfut_error)).failure(),
                    )
                }
            }
        }
    } else {
        quote! { #krate::__private::ret::<#output>(&#call) }
    };
    let decoders = arg_types.iter().map(|ty| {
        if let Some(inner) = many_inner(ty) {
            quote! { #krate::__private::arg_many::<#inner> }
        } else if let Some(inner) = wrapper_inner(ty, "Archived") {
            quote! { #krate::__private::arg_archived::<#inner> }
        } else {
            quote! { #krate::__private::arg::<#ty> }
        }
    });
    let decode = quote! {
        #(let #decoded: #arg_types = #decoders(&__dfut_args, #indices)?;)*
    };
    let invoke = if is_async {
        quote! {
            fn __dfut_invoke(__dfut_args: #krate::__private::Args) -> #krate::__private::BoxTask {
                #krate::__private::boxed(async move {
                    #decode
                    #encode
                })
            }
            #krate::__private::Invoke::Async(__dfut_invoke)
        }
    } else {
        quote! {
            fn __dfut_invoke(__dfut_args: #krate::__private::Args) -> #krate::__private::TaskResult {
                #decode
                #encode
            }
            #krate::__private::Invoke::Sync(__dfut_invoke)
        }
    };
    let retries = r.opts.retries;
    let timeout_ms = r.opts.timeout_ms;
    let retry_on_error = r.opts.retry_on_error;
    // `gpu`: only on GPU workers, sharing their GPU; `gpus = N`: N GPUs
    // held exclusively while it runs.
    let gpus = r.opts.gpus.unwrap_or(0);
    let gpu = r.opts.gpu || gpus > 0;
    let cpus = r.opts.cpus;
    let memory_mb = r.opts.memory_mb;
    let resource_names = r.opts.resources.iter().map(|(n, _)| n);
    let resource_amounts = r.opts.resources.iter().map(|(_, a)| a);
    let cost = match r.opts.cost {
        Some(c) => quote! { ::core::option::Option::Some(#c) },
        None => quote! { ::core::option::Option::None },
    };
    let registered_name = match &r.opts.name {
        Some(name) => quote! { #name },
        None => quote! { ::core::concat!(::core::module_path!(), "::", #name_str) },
    };
    // The full names of the argument and result types, hashed once per
    // process; the caller's travels with each task and the worker's must
    // match it.
    let signature_fn = quote! {
        fn __dfut_signature() -> u64 {
            static SIGNATURE: ::std::sync::OnceLock<u64> = ::std::sync::OnceLock::new();
            *SIGNATURE.get_or_init(|| {
                #krate::__private::signature(&[
                    #(::core::any::type_name::<#arg_types>(),)*
                    ::core::any::type_name::<#output>(),
                ])
            })
        }
    };

    quote! {
        #[doc = #local_doc]
        #[allow(dead_code)]
        #local_fn

        #(#docs)*
        #[doc = ""]
        #[doc = #stub_doc]
        #vis fn #name(#(#arg_names: impl #krate::IntoArg<#arg_types>),*) -> #krate::DistFuture<#output> {
            #signature_fn
            static __DFUT_SPEC: #krate::__private::FnSpec = #krate::__private::FnSpec {
                name: #registered_name,
                signature: __dfut_signature,
                retries: #retries,
                cpus: #cpus,
                gpu: #gpu,
                gpus: #gpus,
                memory_mb: #memory_mb,
                resources: &[#((#resource_names, #resource_amounts)),*],
                cost: #cost,
                timeout_ms: #timeout_ms,
                retry_on_error: #retry_on_error,
            };
            #krate::__private::submit::<#output>(
                &__DFUT_SPEC,
                ::std::vec![#(#krate::IntoArg::<#arg_types>::into_arg(#arg_names)),*],
            )
        }

        const _: () = {
            #(#checks)*
            #output_check
            #signature_fn
            #krate::__private::inventory::submit! {
                #krate::__private::RemoteFn {
                    name: #registered_name,
                    location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                    signature: __dfut_signature,
                    invoke: { #invoke },
                    gpu: #gpu,
                }
            }
        };
    }
}
