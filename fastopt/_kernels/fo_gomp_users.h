/* Does any other loaded library call the OpenMP runtime fastopt uses?

   libgomp's workers do not survive fork(), yet the runtime in the child still believes
   in them: the child's first parallel region waits forever. fastopt knows when its own
   regions ran, but another library linked to the same runtime (xgboost, lightgbm, a
   user's -fopenmp extension) may have left a team behind too. Such a library names the
   runtime's soname among its DT_NEEDED entries; a renamed private copy (the libgomp-<hash>
   that wheels vendor) is another runtime and does not count. */
#ifndef FO_GOMP_USERS_H
#define FO_GOMP_USERS_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>

typedef struct {
    const void *runtime_base;   /* where the runtime is loaded */
    const char *soname;         /* its DT_SONAME, found in the first pass */
    int users;
} fo_gomp_scan;

static const char *fo__dyn_str(const struct dl_phdr_info *info, const ElfW(Dyn) *dyn, ElfW(Sxword) tag,
                               const ElfW(Dyn) **from) {
    const char *strtab = NULL;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_STRTAB) {
            ElfW(Addr) a = d->d_un.d_ptr;
            /* glibc relocates these entries in place on most targets, not on all */
            strtab = (const char *)(a < info->dlpi_addr ? a + info->dlpi_addr : a);
        }
    if (strtab == NULL) return NULL;
    for (const ElfW(Dyn) *d = *from; d->d_tag != DT_NULL; d++)
        if (d->d_tag == tag) { *from = d + 1; return strtab + d->d_un.d_val; }
    return NULL;
}

static const ElfW(Dyn) *fo__dynamic(const struct dl_phdr_info *info) {
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            return (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    return NULL;
}

static int fo__find_soname(struct dl_phdr_info *info, size_t size, void *data) {
    fo_gomp_scan *s = (fo_gomp_scan *)data;
    (void)size;
    if ((const void *)info->dlpi_addr != s->runtime_base) return 0;
    const ElfW(Dyn) *dyn = fo__dynamic(info), *from = dyn;
    if (dyn != NULL) s->soname = fo__dyn_str(info, dyn, DT_SONAME, &from);
    return 1;
}

static int fo__count_users(struct dl_phdr_info *info, size_t size, void *data) {
    fo_gomp_scan *s = (fo_gomp_scan *)data;
    (void)size;
    if ((const void *)info->dlpi_addr == s->runtime_base) return 0;
    if (info->dlpi_name != NULL && strstr(info->dlpi_name, "fastopt/_kernels/") != NULL) return 0;
    const ElfW(Dyn) *dyn = fo__dynamic(info), *from = dyn;
    if (dyn == NULL) return 0;
    const char *needed;
    while ((needed = fo__dyn_str(info, dyn, DT_NEEDED, &from)) != NULL)
        if (strcmp(needed, s->soname) == 0) { s->users++; break; }
    return 0;
}

/* The number of loaded objects, besides fastopt's own modules, linked to fastopt's
   OpenMP runtime; -1 when that cannot be told. */
static int fo_foreign_openmp_users(void) {
    Dl_info where;
    fo_gomp_scan s = {NULL, NULL, 0};
    if (!dladdr((void *)&omp_get_max_threads, &where) || where.dli_fbase == NULL) return -1;
    s.runtime_base = where.dli_fbase;
    dl_iterate_phdr(fo__find_soname, &s);
    if (s.soname == NULL) return -1;
    dl_iterate_phdr(fo__count_users, &s);
    return s.users;
}
#else
static int fo_foreign_openmp_users(void) { return 0; }
#endif
#endif
