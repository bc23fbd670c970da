/*
 * A fake libnvidia-ml.so.1 for the discovery tests: the NVML entry points nvbind's discovery
 * calls through nvml-wrapper, with the ABI of the real library (return codes, handle and
 * struct layouts), answering from "fake-nvml.conf" next to the loaded library file:
 *
 *   driver 550.54.14
 *   cuda 12040
 *   gpu <uuid> <minor> <pci bus id> <name...>
 *   lost                          (the GPU above fell off the bus)
 *   mig <slot> <uuid> <gpu instance id> <compute instance id>   (a MIG device of the GPU above)
 *
 * Without the file, nvmlInit_v2 answers NVML_ERROR_DRIVER_NOT_LOADED.
 * Built by the tests with: gcc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_GPU_IS_LOST = 15,
};

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

#define MAX_GPUS 16
#define MIG_SLOTS 7

struct mig {
    int present;
    char uuid[96];
    unsigned int gi, ci;
};

struct gpu {
    char uuid[96];
    unsigned int minor;
    char bus[32];
    char name[96];
    int lost;
    int mig_mode;
    struct mig migs[MIG_SLOTS];
};

/* A handle points at one of these. */
struct handle {
    int gpu;
    int slot; /* -1 for the full GPU */
};

static struct gpu gpus[MAX_GPUS];
static struct handle gpu_handles[MAX_GPUS];
static struct handle mig_handles[MAX_GPUS][MIG_SLOTS];
static unsigned int ngpus;
static char driver[80];
static int cuda;
static int initialized;

static int read_config(void)
{
    Dl_info info;
    char path[4096];
    char line[512];
    char *slash;
    FILE *f;

    if (!dladdr((void *)&read_config, &info) || !info.dli_fname)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    snprintf(path, sizeof path - 32, "%s", info.dli_fname);
    slash = strrchr(path, '/');
    if (!slash)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    strcpy(slash + 1, "fake-nvml.conf");
    f = fopen(path, "r");
    if (!f)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    memset(gpus, 0, sizeof gpus);
    ngpus = 0;
    while (fgets(line, sizeof line, f)) {
        struct gpu *g = ngpus ? &gpus[ngpus - 1] : NULL;
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "driver ", 7)) {
            snprintf(driver, sizeof driver, "%.79s", line + 7);
        } else if (!strncmp(line, "cuda ", 5)) {
            cuda = atoi(line + 5);
        } else if (!strncmp(line, "gpu ", 4) && ngpus < MAX_GPUS) {
            g = &gpus[ngpus];
            if (sscanf(line + 4, "%95s %u %31s %95[^\n]", g->uuid, &g->minor, g->bus, g->name) == 4) {
                gpu_handles[ngpus].gpu = (int)ngpus;
                gpu_handles[ngpus].slot = -1;
                ngpus++;
            }
        } else if (!strcmp(line, "lost") && g) {
            g->lost = 1;
        } else if (!strncmp(line, "mig ", 4) && g) {
            unsigned int slot;
            struct mig m = {1, "", 0, 0};
            if (sscanf(line + 4, "%u %95s %u %u", &slot, m.uuid, &m.gi, &m.ci) == 4 && slot < MIG_SLOTS) {
                g->mig_mode = 1;
                g->migs[slot] = m;
                mig_handles[g - gpus][slot].gpu = (int)(g - gpus);
                mig_handles[g - gpus][slot].slot = (int)slot;
            }
        }
    }
    fclose(f);
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_out(char *dst, unsigned int len, const char *src)
{
    if (strlen(src) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

/* The GPU a handle belongs to, or NULL; lost GPUs answer GPU_IS_LOST. */
static nvmlReturn_t lookup(void *h, struct gpu **g, struct mig **m)
{
    struct handle *hd = h;
    if (!initialized)
        return NVML_ERROR_UNINITIALIZED;
    if (!hd || hd->gpu < 0 || (unsigned int)hd->gpu >= ngpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    *g = &gpus[hd->gpu];
    if ((*g)->lost)
        return NVML_ERROR_GPU_IS_LOST;
    *m = hd->slot >= 0 ? &(*g)->migs[hd->slot] : NULL;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void)
{
    int r = read_config();
    initialized = r == NVML_SUCCESS;
    return r;
}

nvmlReturn_t nvmlShutdown(void)
{
    initialized = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    if (!initialized)
        return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, driver);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version)
{
    if (!initialized)
        return NVML_ERROR_UNINITIALIZED;
    *version = cuda;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    if (!initialized)
        return NVML_ERROR_UNINITIALIZED;
    *count = ngpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device)
{
    if (!initialized)
        return NVML_ERROR_UNINITIALIZED;
    if (index >= ngpus)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (gpus[index].lost)
        return NVML_ERROR_GPU_IS_LOST;
    *device = &gpu_handles[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    return copy_out(uuid, length, m ? m->uuid : g->uuid);
}

nvmlReturn_t nvmlDeviceGetMinorNumber(void *device, unsigned int *minor)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    if (m)
        return NVML_ERROR_NOT_SUPPORTED;
    *minor = g->minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *device, nvmlPciInfo_t *pci)
{
    struct gpu *g;
    struct mig *m;
    unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%.31s", g->bus);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%.15s", g->bus + 4);
    if (sscanf(g->bus, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) == 4) {
        pci->domain = domain;
        pci->bus = bus;
        pci->device = dev;
    }
    pci->pciDeviceId = 0x233010de;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    return copy_out(name, length, g->name);
}

nvmlReturn_t nvmlDeviceGetMigMode(void *device, unsigned int *current, unsigned int *pending)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    if (m)
        return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned int)g->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *device, unsigned int *count)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    *count = g->mig_mode ? MIG_SLOTS : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *device, unsigned int index, void **mig)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    if (m || index >= MIG_SLOTS)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->migs[index].present)
        return NVML_ERROR_NOT_FOUND;
    *mig = &mig_handles[g - gpus][index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(void *device, unsigned int *id)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    if (!m)
        return NVML_ERROR_INVALID_ARGUMENT;
    *id = m->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(void *device, unsigned int *id)
{
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = lookup(device, &g, &m);
    if (r)
        return r;
    if (!m)
        return NVML_ERROR_INVALID_ARGUMENT;
    *id = m->ci;
    return NVML_SUCCESS;
}
