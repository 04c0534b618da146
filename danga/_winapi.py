"""The Windows declarations, in cffi's in-line ABI mode: the only module that
names a Win32 or NT function, imported by ``danga.pollers.iocp`` alone.

Nothing here is compiled: ``ffi.cdef`` parses the declarations and
``ffi.dlopen`` binds them from the system DLLs at import time, so the
package is pure Python on Windows and ``pip install`` needs no compiler.

The types are spelled for 64-bit and 32-bit Windows alike: ``DWORD`` and
``ULONG`` are ``unsigned long`` (32 bits on every Windows ABI, LLP64),
handles and ``ULONG_PTR`` are pointer-sized.

``OVERLAPPED`` doubles as the ``IO_STATUS_BLOCK`` of an NT request: its
first two members are the status and the information, which is how
kernel32 itself maps the two, so a completion dequeued from the port
carries the address of the ``OVERLAPPED`` the request was issued with.
"""
from __future__ import annotations

import sys
from typing import Any

if sys.platform != "win32":
    raise ImportError("danga._winapi: the Win32 declarations load on Windows only")

import cffi

ffi: Any = cffi.FFI()
ffi.cdef("""
typedef void *HANDLE;
typedef unsigned long DWORD;
typedef unsigned long ULONG;
typedef int BOOL;
typedef uintptr_t ULONG_PTR;
typedef long NTSTATUS;
typedef long long LARGE_INTEGER;

typedef struct {
    ULONG_PTR Internal;
    ULONG_PTR InternalHigh;
    DWORD Offset;
    DWORD OffsetHigh;
    HANDLE hEvent;
} OVERLAPPED;

typedef struct {
    ULONG_PTR lpCompletionKey;
    OVERLAPPED *lpOverlapped;
    ULONG_PTR Internal;
    DWORD dwNumberOfBytesTransferred;
} OVERLAPPED_ENTRY;

/* kernel32 */
HANDLE CreateIoCompletionPort(HANDLE FileHandle, HANDLE ExistingCompletionPort,
                              ULONG_PTR CompletionKey, DWORD NumberOfConcurrentThreads);
BOOL GetQueuedCompletionStatusEx(HANDLE CompletionPort, OVERLAPPED_ENTRY *lpCompletionPortEntries,
                                 ULONG ulCount, ULONG *ulNumEntriesRemoved, DWORD dwMilliseconds,
                                 BOOL fAlertable);
BOOL PostQueuedCompletionStatus(HANDLE CompletionPort, DWORD dwNumberOfBytesTransferred,
                                ULONG_PTR dwCompletionKey, OVERLAPPED *lpOverlapped);
BOOL CancelIoEx(HANDLE hFile, OVERLAPPED *lpOverlapped);
BOOL CloseHandle(HANDLE hObject);
BOOL SetFileCompletionNotificationModes(HANDLE FileHandle, unsigned char Flags);
DWORD GetLastError(void);

/* ntdll: the AFD device, and the poll request on it */
typedef struct {
    unsigned short Length;
    unsigned short MaximumLength;
    wchar_t *Buffer;
} UNICODE_STRING;

typedef struct {
    ULONG Length;
    HANDLE RootDirectory;
    UNICODE_STRING *ObjectName;
    ULONG Attributes;
    void *SecurityDescriptor;
    void *SecurityQualityOfService;
} OBJECT_ATTRIBUTES;

typedef struct {
    HANDLE Handle;
    ULONG Events;
    NTSTATUS Status;
} AFD_POLL_HANDLE_INFO;

typedef struct {
    LARGE_INTEGER Timeout;
    ULONG NumberOfHandles;
    ULONG Exclusive;
    AFD_POLL_HANDLE_INFO Handles[1];
} AFD_POLL_INFO;

NTSTATUS NtCreateFile(HANDLE *FileHandle, DWORD DesiredAccess, OBJECT_ATTRIBUTES *ObjectAttributes,
                      OVERLAPPED *IoStatusBlock, LARGE_INTEGER *AllocationSize, ULONG FileAttributes,
                      ULONG ShareAccess, ULONG CreateDisposition, ULONG CreateOptions, void *EaBuffer,
                      ULONG EaLength);
NTSTATUS NtDeviceIoControlFile(HANDLE FileHandle, HANDLE Event, void *ApcRoutine, void *ApcContext,
                               OVERLAPPED *IoStatusBlock, ULONG IoControlCode, void *InputBuffer,
                               ULONG InputBufferLength, void *OutputBuffer, ULONG OutputBufferLength);
ULONG RtlNtStatusToDosError(NTSTATUS Status);

/* ws2_32 */
int WSAIoctl(ULONG_PTR s, DWORD dwIoControlCode, void *lpvInBuffer, DWORD cbInBuffer, void *lpvOutBuffer,
             DWORD cbOutBuffer, DWORD *lpcbBytesReturned, void *lpOverlapped, void *lpCompletionRoutine);
int WSAGetLastError(void);
typedef struct {
    ULONG len;
    char *buf;
} WSABUF;
int WSASend(ULONG_PTR s, WSABUF *lpBuffers, DWORD dwBufferCount, DWORD *lpNumberOfBytesSent, DWORD dwFlags,
            void *lpOverlapped, void *lpCompletionRoutine);
int getsockopt(ULONG_PTR s, int level, int optname, char *optval, int *optlen);
""")

kernel32: Any = ffi.dlopen("kernel32.dll")
ntdll: Any = ffi.dlopen("ntdll.dll")
ws2_32: Any = ffi.dlopen("ws2_32.dll")

INVALID_HANDLE_VALUE: Any = ffi.cast("HANDLE", -1)
INFINITE = 0xFFFFFFFF
WAIT_TIMEOUT = 258
ERROR_NOT_FOUND = 1168
ERROR_INVALID_HANDLE = 6

STATUS_SUCCESS = 0
STATUS_PENDING = 0x103
STATUS_CANCELLED = 0xC0000120  # as the unsigned Internal member of OVERLAPPED holds it

SYNCHRONIZE = 0x00100000
FILE_SHARE_READ = 1
FILE_SHARE_WRITE = 2
FILE_OPEN = 1
FILE_SKIP_SET_EVENT_ON_HANDLE = 2

IOCTL_AFD_POLL = 0x00012024
SIO_BASE_HANDLE = 0x48000022
SIO_BSP_HANDLE_POLL = 0x4800001D
WSAEWOULDBLOCK = 10035
SOL_SOCKET = 0xFFFF
SO_TYPE = 0x1008

AFD_POLL_RECEIVE = 0x0001
AFD_POLL_RECEIVE_EXPEDITED = 0x0002
AFD_POLL_SEND = 0x0004
AFD_POLL_DISCONNECT = 0x0008
AFD_POLL_ABORT = 0x0010
AFD_POLL_LOCAL_CLOSE = 0x0020
AFD_POLL_ACCEPT = 0x0080
AFD_POLL_CONNECT_FAIL = 0x0100
