/* src/iokit/service.c: the IOService a driver's DMA calls are made for (dmakit/IOService.h):
 * one PCI function by its address, an OSObject that holds the function's IOMapper, and XNU's
 * IOMapper::copyMapperForDevice over it. Which mapper: the one registered for the address
 * (src/mapper/registry.c: a VFIO mapper open in this process), else a new VFIO mapper when
 * the function is bound to vfio-pci, else none. Nothing here touches the device itself. */
#include "iokit/service.h"
#include "prim/prim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct IOService {
  OSObject  obj;
  char      address[32];
  IOMapper *mapper;        /* retained; NULL: none (bus address = physical address) */
};

static void service_free(OSObject *o)
{
  IOService *s = (IOService *)o;
  dk__mapper_release(s->mapper);
  s->mapper = NULL;
  s->obj.cls = NULL;       /* a stale pointer to it is no longer a service */
  dk__free(s);
}

const dk_class dk__service_class = { 0x1b3d0005u, "IOService", service_free, false, NULL };

IOService *dk__service(const void *p) { return dk__object_cast(p, &dk__service_class); }

/* The driver the function is bound to ("" for none), from its sysfs link. */
static IOReturn bound_driver(const char *address, char *driver, size_t cap)
{
  char path[96], link[256];
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s", address);
  if (dk__readlink(path, link, sizeof link) < 0)
    return dk__fail(kIOReturnNoDevice, DK_CONSTRAINT_ARGUMENT, "no PCI function %s (%s)", address, strerror(errno));
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/driver", address);
  driver[0] = '\0';
  if (dk__readlink(path, link, sizeof link) >= 0) {
    const char *name = strrchr(link, '/');
    name = name ? name + 1 : link;
    size_t n = strnlen(name, cap - 1);
    memcpy(driver, name, n);
    driver[n] = '\0';
  }
  return kIOReturnSuccess;
}

IOReturn dk_service_open(const char *address, IOService **out)
{
  dk__enter("dk_service_open");
  if (out) *out = NULL;
  if (!out || !address || !dk__pci_address_ok(address))
    return dk__fail(kIOReturnBadArgument, DK_CONSTRAINT_ARGUMENT,
                    "a PCI address such as 0000:00:04.0 and an out pointer are needed");
  char driver[64];
  IOReturn rc = bound_driver(address, driver, sizeof driver);
  if (rc != kIOReturnSuccess) return rc;
  IOMapper *m = dk__mapper_copy_for_device(address);
  if (!m && !strcmp(driver, "vfio-pci")) {
    if ((rc = dk_mapper_open_vfio(address, &m)) != kIOReturnSuccess) {
      dk__fail_recode("dk_service_open", rc);
      return rc;
    }
    dk__enter("dk_service_open");
  }
  IOService *s = dk__calloc(1, sizeof *s);
  if (!s) {
    dk__mapper_release(m);
    return dk__fail(kIOReturnNoMemory, DK_CONSTRAINT_RESOURCE, "no memory for the service object");
  }
  dk__object_init(&s->obj, &dk__service_class);
  snprintf(s->address, sizeof s->address, "%s", address);
  s->mapper = m;
  *out = s;
  return kIOReturnSuccess;
}

const char *dk_service_get_address(IOService *p)
{
  IOService *s = dk__service(p);
  return s ? s->address : NULL;
}

IOMapper *IOMapper_copyMapperForDevice(IOService *device)
{
  IOService *s = dk__service(device);
  if (!s || !s->mapper) return NULL;
  dk__mapper_retain(s->mapper);
  return s->mapper;
}
