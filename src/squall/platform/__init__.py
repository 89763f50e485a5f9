"""Platform integration: squall's bridge to asyncio lives in
`squall.platform.asyncio`."""
