"""The insert core: one job-row encoding (`row`), the statements that write jobs (`statements`),
what an insert means apart from any connection (`insertion`), and its two faces: the asyncio
source (`client_async`, `prepared_async`) and the sync modules generated from it (`client`,
`prepared`) by tools/async_to_sync.py."""
